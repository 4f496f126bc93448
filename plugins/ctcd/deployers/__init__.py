"""Model deployers: deploy models to model servers and keep a registry of them.

    from ctcd.deployers import get_deployer, DeploymentConfig
    handle = get_deployer().deploy_model(config, strategy="blue_green", timeout=300)

The contract every backend keeps is :mod:`ctcd.deployers.base`; the optional
streaming-scorer capability is :mod:`ctcd.deployers.scorers`.
"""

from __future__ import annotations

from ctcd.deployers.base import (
    DEFAULT_TIMEOUT,
    DeploymentConfig,
    DeploymentEvent,
    ModelDeployer,
    ServerDescription,
    SupportsPromotion,
    SupportsRollback,
    redact_uri,
)
from ctcd.deployers.lookup import load_last_service
from ctcd.deployers.registry import get_deployer, resolve_service
from ctcd.deployers.scorers import (
    ReplicaStatus,
    ScorerConfig,
    ScorerInfo,
    ScorerNotFound,
    SupportsScorers,
    scorers_of,
)
from ctcd.deployers.strategies import (
    STRATEGIES,
    BlueGreen,
    Canary,
    Replace,
    Strategy,
    StrategySpec,
    resolve_strategy,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "STRATEGIES",
    "BlueGreen",
    "Canary",
    "DeploymentConfig",
    "DeploymentEvent",
    "ModelDeployer",
    "Replace",
    "ReplicaStatus",
    "ScorerConfig",
    "ScorerInfo",
    "ScorerNotFound",
    "ServerDescription",
    "Strategy",
    "StrategySpec",
    "SupportsPromotion",
    "SupportsRollback",
    "SupportsScorers",
    "get_deployer",
    "load_last_service",
    "redact_uri",
    "resolve_service",
    "resolve_strategy",
    "scorers_of",
]
