"""ctcd: continuous training and continuous deployment of ML models on Apache Airflow 3."""

from __future__ import annotations

__version__ = "0.1.0"
