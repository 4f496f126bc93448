"""A pyfunc model (MLflow models-from-code) that warms at once, then takes 300 ms a call: a
shadow far slower than the champion (which answers in 1-2 ms, and stays under 150 ms at
its p99 even on a loaded machine: at 50 ms a call a live hiccup of 64 ms once let the slow
shadow pass the 2x p99 limit)."""

from __future__ import annotations

import time
from typing import Any

import mlflow

SECONDS = 0.3


class SlowModel(mlflow.pyfunc.PythonModel):
    def __init__(self) -> None:
        self.calls = 0

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        self.calls += 1
        if self.calls > 1:
            time.sleep(SECONDS)
        return [0] * len(model_input)


mlflow.models.set_model(SlowModel())
