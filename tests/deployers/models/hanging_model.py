"""A pyfunc model (MLflow models-from-code) that warms at once, then hangs (60 s a call,
beyond any shadow timeout)."""

from __future__ import annotations

import time
from typing import Any

import mlflow

SECONDS = 60.0


class HangingModel(mlflow.pyfunc.PythonModel):
    def __init__(self) -> None:
        self.calls = 0

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        self.calls += 1
        if self.calls > 1:
            time.sleep(SECONDS)
        return [0] * len(model_input)


mlflow.models.set_model(HangingModel())
