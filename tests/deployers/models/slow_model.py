"""A pyfunc model (MLflow models-from-code) that warms at once, then takes 50 ms a call: a
shadow far slower than the champion (which answers in 1-2 ms)."""

from __future__ import annotations

import time
from typing import Any

import mlflow

SECONDS = 0.05


class SlowModel(mlflow.pyfunc.PythonModel):
    def __init__(self) -> None:
        self.calls = 0

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        self.calls += 1
        if self.calls > 1:
            time.sleep(SECONDS)
        return [0] * len(model_input)


mlflow.models.set_model(SlowModel())
