"""A pyfunc model (MLflow models-from-code) that answers fast and never like the champion:
its label is -1, a class no churn model predicts (a shadow that disagrees on every row)."""

from __future__ import annotations

from typing import Any

import mlflow


class ContraryModel(mlflow.pyfunc.PythonModel):
    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        return [-1] * len(model_input)


mlflow.models.set_model(ContraryModel())
