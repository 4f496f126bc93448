"""Entry file Airflow loads from the plugins folder: registers the ctcd Airflow plugin."""

from __future__ import annotations

from ctcd.airflow_plugin import CtcdPlugin

__all__ = ["CtcdPlugin"]
