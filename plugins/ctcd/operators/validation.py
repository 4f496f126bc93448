"""``ValidateDataOperator``: a snapshot through its Great Expectations checkpoint, with the
Data Docs page of the result as the task's extra link (also when the data failed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink

DATA_DOCS_KEY = "data_docs"


class DataDocsLink(BaseOperatorLink):
    """The Data Docs page of the validation the task ran, served to signed-in users by the
    deployments view's app (the page is kept under ``$CTCD_HOME/gx`` and logged to MLflow
    with the run)."""

    name = "Data Docs"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        pull = getattr(ti_key, "xcom_pull", None)
        if pull is None:
            return ""
        page = pull(task_ids=ti_key.task_id, key=DATA_DOCS_KEY)
        if not (isinstance(page, str) and page):
            return ""
        from airflow.sdk.configuration import conf

        from ctcd.operators.links import APP_PREFIX
        from ctcd.settings import get_settings
        from ctcd.validation.docs_site import page_link

        base = (conf.get("api", "base_url", fallback=None) or "").rstrip("/")
        return page_link(get_settings().home, page, f"{base}{APP_PREFIX}")


class ValidateDataOperator(BaseOperator):
    """Validate the snapshot ``ingested`` (the ``ingest`` step's result) with its data
    set's expectation suite. Fails closed and without retries: bad data stops the run.

    :param ingested: the ingest step's result (an XComArg), with ``snapshot``, ``dataset``
        and ``day``.
    :param mlflow_conn_id: MLflow connection a failed result is logged to.
    """

    template_fields: Sequence[str] = ("ingested",)
    operator_extra_links = (DataDocsLink(),)
    ui_color = "#e8f4ea"

    def __init__(
        self, *, ingested: Any, mlflow_conn_id: str = "mlflow_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ingested = ingested
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from ctcd.pipelines import continuous_training as pipeline
        from ctcd.tasks import fail_without_retry
        from ctcd.tracking import get_tracking
        from ctcd.validation.checkpoint import ValidationFailed

        ti = context["ti"]
        lineage = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}
        ingested: Mapping[str, Any] = self.ingested
        with fail_without_retry():
            try:
                result = pipeline.validate(
                    ingested, get_tracking(self.mlflow_conn_id), lineage=lineage
                )
            except ValidationFailed as err:
                self._keep_link(ti, err.outcome.docs_page)
                raise
        self._keep_link(ti, result.get("docs_page"))
        self.log.info(
            "Partition %s of %s passed %s expectations; result %s",
            ingested["day"],
            ingested["dataset"],
            result["evaluated"],
            result["report"],
        )
        return result

    @staticmethod
    def _keep_link(ti: Any, page: Any) -> None:
        if page:
            ti.xcom_push(key=DATA_DOCS_KEY, value=str(page))
