"""
### Continuous training

Retrains a model on each new partition of its data set and ships it only when it is better.
Runs when a producer updates the data set's Asset (`ctcd://datasets/churn`, e.g. the
`data_producer` DAG), every midnight (UTC), or when triggered.

`ingest` (checks the run's parameters; copies the newest partition not yet trained on from
the landing location or the SQL source into a local snapshot; skips the run when there is
nothing new) -> `validate` (the data set's Great Expectations checkpoint; fails closed:
bad data stops the run, the result and its Data Docs page are kept and linked) -> `train`
(scikit-learn pipeline tracked in MLflow: params, metrics, signature, dataset lineage, the
validation result, the partition's watermark tags) -> `evaluate` (holdout scores of the
candidate and of the serving champion, on the same rows) -> `deployment_trigger` (deploys
only above `min_roc_auc` and when it beats the champion; otherwise the rest is skipped) ->
`register` (new registry version, alias `challenger`) -> `deploy` (`DeployModelOperator`:
into the model server already serving this model, with `strategy`) -> `verify` (the
endpoint answers holdout rows like the registered model, from the new version) ->
`promote` (alias `champion`; emits the model's Asset with the version).

Trigger it from the UI form or `POST /api/v2/dags/continuous_training/dagRuns` with a
`conf` that overrides any parameter, e.g. `{"snapshot_date": "2026-11-20", "force": true}`
or `{"source": "sql", "sql_conn_id": "warehouse", "sql_query": "SELECT * FROM churn"}`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    dag,
    get_current_context,
    task,
)

from ctcd.data.assets import dataset_asset
from ctcd.operators.deploy import DeployModelOperator
from ctcd.operators.validation import ValidateDataOperator
from ctcd.training.params import airflow_params

DATASET = "churn"
SERVING_ASSET = Asset(name="churn-classifier-serving", uri="ctcd://models/churn-classifier")


def _lineage() -> dict[str, str]:
    context = get_current_context()
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}


@dag(
    dag_id="continuous_training",
    # On new data (the data set's Asset) and every midnight (UTC). No start_date, and
    # run_immediately=0: the first timed run is the next midnight. (Airflow's default runs
    # the last midnight at once when the DAG is unpaused within 2.4 h of it.)
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 0 * * *", timezone="UTC",
                                       run_immediately=timedelta(0)),
        assets=dataset_asset(DATASET),
    ),
    catchup=False,
    max_active_runs=1,
    tags=["ctcd", "training", "deployment"],
    doc_md=__doc__,
    params=airflow_params(),
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=20),
        "execution_timeout": timedelta(minutes=30),
    },
)
def continuous_training() -> None:
    @task
    def ingest() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from ctcd.pipelines import continuous_training as pipeline
        from ctcd.tasks import fail_without_retry
        from ctcd.tracking import get_tracking

        params = dict(get_current_context()["params"])
        with fail_without_retry():
            try:
                return pipeline.ingest(params, get_tracking())
            except pipeline.NothingNew as nothing:
                print(f"Skipping the run: {nothing}")
                raise AirflowSkipException(str(nothing)) from nothing

    @task
    def train(snapshot: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
        from ctcd.pipelines import continuous_training as pipeline
        from ctcd.tracking import get_tracking

        params = dict(get_current_context()["params"])
        return pipeline.train(snapshot, report, params, _lineage(), get_tracking())

    @task
    def evaluate(candidate: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
        from ctcd.pipelines import continuous_training as pipeline
        from ctcd.tracking import get_tracking

        params = dict(get_current_context()["params"])
        return pipeline.evaluate(candidate, snapshot, params, get_tracking())

    @task.short_circuit
    def deployment_trigger(evaluation: dict[str, Any]) -> bool:
        from ctcd.pipelines import continuous_training as pipeline

        params = dict(get_current_context()["params"])
        decision = pipeline.deployment_trigger(evaluation, params)
        print(f"Deployment trigger: {decision['reason']}")
        return bool(decision["deploy"])

    @task
    def register(candidate: dict[str, Any]) -> dict[str, Any]:
        from ctcd.pipelines import continuous_training as pipeline
        from ctcd.tracking import get_tracking

        return pipeline.register(candidate, _lineage(), get_tracking())

    @task
    def verify(handle: Any, registered: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
        from ctcd.pipelines import continuous_training as pipeline
        from ctcd.tasks import roll_back_on_failure
        from ctcd.tracking import get_tracking

        params = dict(get_current_context()["params"])
        with roll_back_on_failure(handle, registered):
            return pipeline.verify(handle.endpoint, registered, snapshot, params, get_tracking())

    @task(outlets=[SERVING_ASSET])
    def promote(registered: dict[str, Any], verified: dict[str, Any]) -> dict[str, Any]:
        from ctcd.pipelines import continuous_training as pipeline
        from ctcd.tracking import get_tracking

        promoted = pipeline.promote(registered, get_tracking())
        context = get_current_context()
        context["outlet_events"][SERVING_ASSET].extra = {
            "model_name": registered["model_name"],
            "version": registered["version"],
            "endpoint": verified["endpoint"],
        }
        return promoted

    snapshot = ingest()
    report = ValidateDataOperator(task_id="validate", ingested=snapshot).output
    candidate = train(snapshot, report)
    evaluation = evaluate(candidate, snapshot)
    gate = deployment_trigger(evaluation)
    registered = register(candidate)
    gate >> registered
    deploy = DeployModelOperator(
        task_id="deploy",
        model_name="{{ ti.xcom_pull(task_ids='register')['model_name'] }}",
        model_version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        model_uri="{{ ti.xcom_pull(task_ids='register')['model_uri'] }}",
        mlflow_run_id="{{ ti.xcom_pull(task_ids='register')['run_id'] }}",
        strategy="{{ params.strategy }}",
        timeout=300,
        retries=1,
    )
    registered >> deploy
    verified = verify(deploy.output, registered, snapshot)
    promote(registered, verified)


continuous_training()
