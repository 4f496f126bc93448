"""Example backends showing how to plug your own deployer in with ``CTCD_DEPLOYER``."""
