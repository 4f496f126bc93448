"""Service handles: deployed model servers as small values that travel through XCom.

This package depends on nothing of the deployers (they build handles; handles never call
back into them). Finding handles again is a deployer query:
:func:`ctcd.deployers.load_last_service`.
"""

from __future__ import annotations

from ctcd.services.handle import PredictInput, ServiceHandle, ServiceStatus, probe

__all__ = ["PredictInput", "ServiceHandle", "ServiceStatus", "probe"]
