"""
### Model monitoring

Compares what the serving champion saw and answered with what it was trained on, and
retrains when the world has moved. One DAG per model file, `<model>_monitoring`, on the
model file's `monitoring.schedule` (default hourly).

`check` reads the model server's sampled request log for the champion version since the
last check (the watermark is the Airflow Variable `ctcd_monitoring__<model name>`), compares
each feature and the predictions with the reference statistics logged with the model's
training run (PSI over bins and categories; KS and Wasserstein for numerics), reports live
metrics where delayed labels have arrived (accuracy, macro F1 or RMSE, by task), writes
the drift report (CSV/JSON table, PNG
plot, HTML page under `$CTCD_HOME/reports/monitoring/`) and logs it to MLflow as a run of
the `model_monitoring` experiment. With fewer than `min_samples` served rows it says so,
keeps its window open and does not retrain.

`retraining_needed` lets the run go on only when drift passed the thresholds, retraining
is not cooling down, a partition has landed since the model last trained (otherwise it says
"drift seen; waiting for new data", leaves the reason on the registered model for the next
training run, and does not start the cool-down), and no run of the model's training DAG is
already queued or running; `trigger_retraining` then starts it with the reason in its
`conf` (`trigger_reason`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, get_current_context, task

from ctcd.models import ModelDefinition, load_models
from ctcd.models.dags import default_args, tags
from ctcd.models.dags import doc as model_doc
from ctcd.monitoring.params import airflow_params

WATERMARK_PREFIX = "ctcd_monitoring__"


def _load_watermark(model_name: str) -> dict[str, Any]:
    import json

    from airflow.sdk import Variable

    return dict(json.loads(Variable.get(WATERMARK_PREFIX + model_name, default="{}")))


def _save_watermark(model_name: str, watermark: dict[str, Any]) -> None:
    import json

    from airflow.sdk import Variable

    Variable.set(WATERMARK_PREFIX + model_name, json.dumps(watermark),
                 description=f"model monitoring watermark of {model_name}")


def monitoring_dag(model: ModelDefinition) -> Any:
    key, retrain_dag_id = model.key, model.training_dag_id

    @dag(
        dag_id=model.monitoring_dag_id,
        schedule=model.monitoring.schedule,
        catchup=False,
        # Watching is cheap and harmless (it retrains only on drift): on from the start.
        is_paused_upon_creation=False,
        max_active_runs=1,
        tags=tags(model, "monitoring"),
        doc_md=model_doc(model, __doc__ or ""),
        params=airflow_params(model.monitoring.params),
        default_args=default_args(model, retry_seconds=30, timeout=timedelta(minutes=20)),
    )
    def model_monitoring() -> None:
        @task
        def check() -> dict[str, Any]:
            from ctcd.hooks.mlflow_tracking import MlflowHook
            from ctcd.models import load_model
            from ctcd.monitoring import labels, pipeline, served
            from ctcd.monitoring.params import parse_params
            from ctcd.pipelines.ingest import new_partitions, set_pending_retrain
            from ctcd.settings import get_settings
            from ctcd.tasks import fail_without_retry
            from ctcd.tracking import get_tracking

            context = get_current_context()
            with fail_without_retry():
                definition = load_model(key)
                params = parse_params(context["params"])
            settings = get_settings()
            name = definition.model_name
            watermark = _load_watermark(name)
            ti = context["ti"]
            tracking = get_tracking()
            result = pipeline.check(
                params, watermark, client=MlflowHook().client,
                request_log=served.default_log_path(), labels_path=labels.default_labels_path(),
                reports_dir=settings.reports_dir / "monitoring", model_name=name,
                lineage={"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id},
                new_data=lambda: new_partitions(definition, {}, tracking),
            )
            if result.waiting_for_data:
                set_pending_retrain(tracking, name, result.reason)
            if result.watermark != watermark:
                _save_watermark(name, result.watermark)
            print(f"Monitoring: {result.status}: {result.reason}")
            return result.as_dict()

        @task.short_circuit
        def retraining_needed(result: dict[str, Any]) -> bool:
            if not result["retrain"]:
                print(f"No retraining: {result['status']}: {result['reason']}")
                return False
            active = get_current_context()["ti"].get_dr_count(
                retrain_dag_id, states=["queued", "running"])
            if active:
                print(f"No retraining: {retrain_dag_id} already has {active} run(s) queued or "
                      f"running, which will train on the newest data. Drift: {result['reason']}")
                return False
            from ctcd.monitoring.pipeline import mark_triggered

            # The cool-down starts with the trigger, not with the check that asked for it.
            _save_watermark(result["model_name"],
                            mark_triggered(_load_watermark(result["model_name"])))
            print(f"Retraining: {result['reason']}")
            return True

        result = check()
        trigger = TriggerDagRunOperator(
            task_id="trigger_retraining",
            trigger_dag_id=retrain_dag_id,
            conf={"trigger_reason": "{{ ti.xcom_pull(task_ids='check')['reason'] }}"},
            wait_for_completion=False,
            retries=2,
        )
        retraining_needed(result) >> trigger

    return model_monitoring()


for _model in load_models().models.values():
    if _model.monitoring.enabled:
        globals()[_model.monitoring_dag_id] = monitoring_dag(_model)
