"""The ctcd Airflow plugin: registers the deploy task's extra links with the API server.

Airflow loads this module from the plugins folder. Airflow imports *every* ``.py`` file
there under its bare file name, so no module in this package may be named like a top-level
package it imports (hence ``hooks/mlflow_tracking.py``, not ``hooks/mlflow.py``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ctcd.operators.links import MlflowRunLink, ModelServerLink
from ctcd.operators.validation import DataDocsLink


class CtcdPlugin(AirflowPlugin):
    name = "ctcd"
    operator_extra_links = [ModelServerLink(), MlflowRunLink(), DataDocsLink()]  # noqa: RUF012
