"""Score rows on a deployed model server (model as a service)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from ctcd.deployers import get_deployer
from ctcd.errors import InvalidParams, ModelServerNotFound
from ctcd.services.handle import ServiceHandle


class PredictOperator(BaseOperator):
    """Send ``data`` to a model server and return its predictions (XCom).

    :param data: rows as a list of records or a dict of columns (templated; an XComArg works).
    :param service: a :class:`~ctcd.services.ServiceHandle`, e.g. a deploy task's output
        (``deploy.output``); or
    :param model_name: the model whose running server to use (templated).
    :param deployer: backend used to find the server by ``model_name``.
    """

    template_fields: Sequence[str] = ("data", "service", "model_name")

    def __init__(
        self,
        *,
        data: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
        service: ServiceHandle | None = None,
        model_name: str | None = None,
        deployer: str | None = None,
        timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data = data
        self.service = service
        self.model_name = model_name
        self.deployer = deployer
        self.timeout = timeout

    def execute(self, context: Any) -> list[Any]:
        handle = self.service
        if handle is None:
            if not self.model_name:
                raise InvalidParams("PredictOperator needs `service` or `model_name`")
            found = get_deployer(self.deployer).find_model_server(
                model_name=self.model_name, running=True
            )
            if not found:
                raise ModelServerNotFound(f"a running server for model {self.model_name!r}")
            handle = found[0]
        predictions = handle.predict(self.data, timeout=self.timeout)
        self.log.info("%d predictions from %s version %s", len(predictions),
                      handle.model_name, handle.model_version)
        return predictions
