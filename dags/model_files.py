"""The model files under include/models/ that could not be read.

Each model's DAGs are generated from its model file by continuous_training.py,
batch_inference.py and model_monitoring.py, which leave a broken file out so that it never
hides the other models' DAGs. This file makes the broken ones visible: it fails to import
with every broken file's message (its path, line and field), which the Airflow UI shows
under "DAG Import Errors" until the file is fixed. It defines no DAG.
"""

from __future__ import annotations

from ctcd.models import load_models
from ctcd.models.files import BrokenModelFiles

_broken = load_models().errors
if _broken:
    raise BrokenModelFiles(_broken)
