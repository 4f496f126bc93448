"""Operators: deploy a model, manage a model server's lifecycle, score rows on it."""

from __future__ import annotations

from ctcd.operators.deploy import DeployModelOperator
from ctcd.operators.lifecycle import ModelServerLifecycleOperator
from ctcd.operators.links import MlflowRunLink, ModelServerLink
from ctcd.operators.predict import PredictOperator

__all__ = [
    "DeployModelOperator",
    "MlflowRunLink",
    "ModelServerLifecycleOperator",
    "ModelServerLink",
    "PredictOperator",
]
