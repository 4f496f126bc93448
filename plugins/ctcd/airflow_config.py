"""Airflow settings this project's code needs, as ``AIRFLOW__SECTION__KEY`` variables.

Applied by the embedded stack (``ctcd.stack``) and the test fixtures; for another deployment
copy them into its ``airflow.cfg`` or environment.
"""

from __future__ import annotations

AIRFLOW_ENV: dict[str, str] = {
    # ServiceHandle values travel through XCom between tasks (Airflow 3 serde allow-list).
    "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES": "airflow.* ctcd.services.*",
}
