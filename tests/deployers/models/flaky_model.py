"""A pyfunc model (MLflow models-from-code) that answers its warm-up call, then fails.

It loads and warms fine, so a server accepts it; under traffic every call errors (HTTP 5xx):
the "errors under traffic" case that blue/green verification and canary analysis must catch.
"""

from __future__ import annotations

from typing import Any

import mlflow


class FlakyModel(mlflow.pyfunc.PythonModel):
    def __init__(self) -> None:
        self.calls = 0

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("flaky model: fails under traffic")
        return [0] * len(model_input)


mlflow.models.set_model(FlakyModel())
