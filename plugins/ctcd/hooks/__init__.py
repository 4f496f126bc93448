"""Hooks: one connection each, handing out clients; no business logic."""

from __future__ import annotations

from ctcd.hooks.mlflow_tracking import MlflowHook
from ctcd.hooks.model_server import ModelServerHook

__all__ = ["MlflowHook", "ModelServerHook"]
