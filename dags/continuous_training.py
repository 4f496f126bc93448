"""
### Continuous training

Retrains the churn model on each day's data snapshot and ships it only when it is better.

`ingest` (checks the run's parameters, writes the snapshot) -> `validate` (fails closed:
bad data stops the run, the report is kept) -> `train` (scikit-learn pipeline tracked in
MLflow: params, metrics, signature, input example, dataset lineage) -> `evaluate` (holdout
scores of the candidate and of the serving champion, on the same rows) ->
`deployment_trigger` (deploys only above `min_roc_auc` and when it beats the champion;
otherwise the rest is skipped) -> `register` (new registry version, alias `challenger`) ->
`deploy` (`DeployModelOperator`: into the model server already serving this model, with
`strategy`; a new server's start is awaited in the triggerer) -> `verify`
(the endpoint answers holdout rows like the registered model, from the new version) ->
`promote` (alias `champion`; emits the model's Asset with the version).

Trigger it from the UI form or `POST /api/v2/dags/continuous_training/dagRuns` with a
`conf` that overrides any parameter, e.g. `{"model_type": "random_forest", "min_roc_auc": 0.8}`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, dag, get_current_context, task

from ctcd.operators.deploy import DeployModelOperator
from ctcd.training.params import airflow_params

SERVING_ASSET = Asset(name="churn-classifier-serving", uri="ctcd://models/churn-classifier")


def _lineage() -> dict[str, str]:
    context = get_current_context()
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}


@dag(
    dag_id="continuous_training",
    # No start_date: the first scheduled run is the next midnight (UTC), not a catch-up run
    # the moment the DAG is unpaused; manual and REST-triggered runs start at once.
    schedule="@daily",
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
        from ctcd.tasks import fail_without_retry
        from ctcd.training import steps

        context = get_current_context()
        logical = context.get("logical_date")
        with fail_without_retry():
            return steps.ingest(dict(context["params"]), logical.date() if logical else None)

    @task
    def validate(snapshot: dict[str, Any]) -> dict[str, Any]:
        from ctcd.tasks import fail_without_retry
        from ctcd.training import steps

        with fail_without_retry():
            return steps.validate(snapshot["snapshot"])

    @task
    def train(snapshot: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
        from ctcd.training import steps

        return steps.train(snapshot["snapshot"], dict(get_current_context()["params"]), _lineage())

    @task
    def evaluate(candidate: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
        from ctcd.training import steps

        params = dict(get_current_context()["params"])
        return steps.evaluate(candidate, snapshot["snapshot"], params)

    @task.short_circuit
    def deployment_trigger(evaluation: dict[str, Any]) -> bool:
        from ctcd.training import steps

        decision = steps.deployment_trigger(evaluation, dict(get_current_context()["params"]))
        print(f"Deployment trigger: {decision['reason']}")
        return bool(decision["deploy"])

    @task
    def register(candidate: dict[str, Any]) -> dict[str, Any]:
        from ctcd.training import steps

        return steps.register(candidate, _lineage())

    @task
    def verify(handle: Any, registered: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
        from ctcd.tasks import roll_back_on_failure
        from ctcd.training import steps

        params = dict(get_current_context()["params"])
        with roll_back_on_failure(handle, registered):
            return steps.verify(handle.endpoint, registered, snapshot["snapshot"], params)

    @task(outlets=[SERVING_ASSET])
    def promote(registered: dict[str, Any], verified: dict[str, Any]) -> dict[str, Any]:
        from ctcd.training import steps

        promoted = steps.promote(registered)
        context = get_current_context()
        context["outlet_events"][SERVING_ASSET].extra = {
            "model_name": registered["model_name"],
            "version": registered["version"],
            "endpoint": verified["endpoint"],
        }
        return promoted

    snapshot = ingest()
    report = validate(snapshot)
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
