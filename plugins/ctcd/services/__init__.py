"""Service handles: deployed model servers as small values that travel through XCom."""

from __future__ import annotations

from ctcd.services.handle import PredictInput, ServiceHandle, ServiceStatus, probe
from ctcd.services.lookup import load_last_service

__all__ = ["PredictInput", "ServiceHandle", "ServiceStatus", "load_last_service", "probe"]
