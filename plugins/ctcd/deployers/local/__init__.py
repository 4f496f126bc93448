"""The ``local`` backend: model servers as detached processes on this machine."""

from __future__ import annotations

from ctcd.deployers.local.deployer import LocalDeployer

__all__ = ["LocalDeployer"]
