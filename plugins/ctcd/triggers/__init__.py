"""Triggers: asynchronous waits that run in the Airflow triggerer, not in a worker slot."""

from __future__ import annotations

from ctcd.triggers.model_server import ModelServerReadyTrigger

__all__ = ["ModelServerReadyTrigger"]
