"""A pyfunc model (MLflow models-from-code) whose every prediction raises: its warm-up fails."""

from __future__ import annotations

from typing import Any

import mlflow


class CrashingModel(mlflow.pyfunc.PythonModel):
    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        raise RuntimeError("crashing model: cannot predict")


mlflow.models.set_model(CrashingModel())
