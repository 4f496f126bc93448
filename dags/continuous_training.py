"""
### Continuous training

Retrains the model on each new partition of its data set and ships it only when it is
better. One DAG per model file (`include/models/<model>.yaml`), `<model>_training`: it runs
when a producer updates the data set's Asset (`ctcd://datasets/<dataset>`), on the model
file's cron (UTC), or when triggered.

`ingest` (checks the run's parameters and the trainer; copies the window of partitions
ending with the newest one not trained on from the landing location or the SQL source into
local snapshots; skips the run when there is nothing new) -> `validate` (the data set's
Great Expectations checkpoint on each partition; fails closed: bad data stops the run, the
result and its Data Docs page are kept and linked) -> `train` (the model file's trainer:
the built-in scikit-learn trainer or your own function; tracked in MLflow with its flavor:
params, signature, dataset lineage, the validation result, reference statistics, the
watermark tags) -> `evaluate` (MLflow's evaluation of the candidate and of the serving
champion, on the same holdout rows) -> `deployment_trigger` (deploys only when the gate's
metric passes its threshold and beats the champion; otherwise the rest is skipped) ->
`register` (new registry version, alias `challenger`) -> `deploy` (`DeployModelOperator`:
into the model server already serving this model, with `strategy`) -> `verify` (the
endpoint answers holdout rows like the registered model, from the new version) ->
`approve` (only when approval is on: the model file's `deployment.approval` or the run's
`approval` Param; a person answers under Required Actions with the evidence in front of
them; Reject, or no answer in time, rolls the version back; a `shadow` deploy with too few
mirrored requests to judge is then not failed but left shadowing, and the person promotes
it to live or drops it with its comparison in front of them) -> `promote` (alias
`champion`; emits the model's Asset with the version). The gate's decision and the
approval are written to the run's note when it ends.

**Starts paused**, as every new DAG does here (Airflow's `dags_are_paused_at_creation`):
unpause it to train on new data, the cron or a trigger. The model's
`<model>_batch_inference` also starts paused, so a promotion scores nothing until it is
unpaused; `<model>_monitoring` starts unpaused (it only reads and reports).

Trigger it from the UI form or `POST /api/v2/dags/<model>_training/dagRuns` with a `conf`
that overrides any parameter, e.g. `{"snapshot_date": "2026-11-20", "force": true}` or
`{"source": "sql", "sql_conn_id": "warehouse", "sql_query": "SELECT * FROM churn"}`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, get_current_context, task

from ctcd.batch.assets import serving_asset
from ctcd.models import ModelDefinition, load_models
from ctcd.models.dags import default_args, doc, tags, training_schedule
from ctcd.operators.approval import ApproveDeploymentOperator
from ctcd.operators.deploy import DeployModelOperator
from ctcd.operators.validation import ValidateDataOperator
from ctcd.params import airflow_params
from ctcd.training.params import ContinuousTrainingParams


def _lineage() -> dict[str, str]:
    ti = get_current_context()["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}


def _run(key: str) -> tuple[Any, dict[str, Any], Any]:
    """The model file, the run's params and the tracking server, inside a task."""
    from ctcd.models import load_model
    from ctcd.tracking import get_tracking

    return load_model(key), dict(get_current_context()["params"]), get_tracking()


def training_dag(model: ModelDefinition) -> Any:
    key = model.key
    serving = serving_asset(model.model_name)
    deployment = model.deployment

    @dag(
        dag_id=model.training_dag_id,
        schedule=training_schedule(model),
        catchup=False,
        max_active_runs=1,
        tags=tags(model, "training", "deployment"),
        doc_md=doc(model, __doc__ or ""),
        params=airflow_params(ContinuousTrainingParams, model.training_params()),
        default_args=default_args(model),
    )
    def continuous_training() -> None:
        @task
        def ingest() -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from ctcd.pipelines import continuous_training as pipeline
            from ctcd.tasks import fail_without_retry

            with fail_without_retry():
                definition, params, tracking = _run(key)
                try:
                    return pipeline.ingest(definition, params, tracking)
                except pipeline.NothingNew as nothing:
                    print(f"Skipping the run: {nothing}")
                    raise AirflowSkipException(str(nothing)) from nothing

        @task
        def train(snapshot: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
            from ctcd.pipelines import continuous_training as pipeline
            from ctcd.tasks import fail_without_retry

            definition, params, tracking = _run(key)
            with fail_without_retry():
                return pipeline.train(definition, snapshot, report, params, _lineage(), tracking)

        @task
        def evaluate(candidate: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
            from ctcd.pipelines import continuous_training as pipeline

            definition, params, tracking = _run(key)
            return pipeline.evaluate(definition, candidate, snapshot, params, tracking)

        @task.short_circuit
        def deployment_trigger(evaluation: dict[str, Any]) -> bool:
            from ctcd.pipelines import continuous_training as pipeline

            definition, params, _ = _run(key)
            decision = pipeline.deployment_trigger(definition, evaluation, params)
            print(f"Deployment trigger: {decision['reason']}")
            get_current_context()["ti"].xcom_push(key="decision", value=decision)
            return bool(decision["deploy"])

        @task
        def register(candidate: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
            from ctcd.pipelines import continuous_training as pipeline

            definition, params, tracking = _run(key)
            decision = pipeline.deployment_trigger(definition, evaluation, params)
            return pipeline.register(definition, candidate, _lineage(), tracking,
                                     decision=decision["reason"])

        @task
        def verify(handle: Any, registered: dict[str, Any],
                   snapshot: dict[str, Any]) -> dict[str, Any]:
            from ctcd.pipelines import continuous_training as pipeline
            from ctcd.tasks import roll_back_on_failure

            definition, params, tracking = _run(key)
            deployed = get_current_context()["ti"].xcom_pull(task_ids="deploy",
                                                            key="deployment") or {}
            if deployed.get("outcome") == "held":
                print(f"Version {registered['version']} shadows the live version and answers no "
                      "client, so there is nothing to verify at the endpoint: its comparison "
                      "with the live version is the evidence, and a person decides (approve).")
                return {"endpoint": handle.endpoint, "version": registered["version"],
                        "shadow": "held", "rows_checked": 0}
            with roll_back_on_failure(handle, registered):
                return pipeline.verify(definition, handle.endpoint, registered, snapshot,
                                       params, tracking)

        @task(outlets=[serving])
        def promote(registered: dict[str, Any], verified: dict[str, Any]) -> dict[str, Any]:
            from ctcd.pipelines import continuous_training as pipeline
            from ctcd.tracking import get_tracking

            promoted = pipeline.promote(registered, get_tracking())
            get_current_context()["outlet_events"][serving].extra = {
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
        registered = register(candidate, evaluation)
        gate >> registered
        deploy = DeployModelOperator(
            task_id="deploy",
            model_name="{{ ti.xcom_pull(task_ids='register')['model_name'] }}",
            model_version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
            model_uri="{{ ti.xcom_pull(task_ids='register')['model_uri'] }}",
            mlflow_run_id="{{ ti.xcom_pull(task_ids='register')['run_id'] }}",
            strategy="{{ params.strategy }}",
            strategy_options=deployment.strategy_options,
            strategy_options_for=deployment.strategy,
            server=deployment.server,
            workers=deployment.workers,
            server_options=deployment.server_options,
            deployer=deployment.deployer,
            timeout=deployment.timeout,
            # A shadow too little used to judge is left for the approval to decide.
            hold_inconclusive_shadow="{{ params.approval }}",
            retries=1,
        )
        registered >> deploy
        verified = verify(deploy.output, registered, snapshot)
        # Retries: Airflow 3.3's scheduler can fail a try answered within moments of asking;
        # the next try acts on that answer (see ApproveDeploymentOperator._recover).
        approve = ApproveDeploymentOperator(task_id="approve", registered=registered,
                                            retries=3)
        verified >> approve >> promote(registered, verified)

    return continuous_training()


for _model in load_models().models.values():
    globals()[_model.training_dag_id] = training_dag(_model)
