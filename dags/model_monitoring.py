"""
### Model monitoring

Every hour, compares what the serving champion saw and answered with what it was trained
on, and retrains when the world has moved.

`check` reads the model server's sampled request log for the champion version since the
last check (the watermark is the Airflow Variable `ctcd_monitoring__<model>`), compares
each feature and the predictions with the reference statistics logged with the model's
training run (PSI over bins and categories; KS and Wasserstein for numerics), reports live
accuracy where delayed labels have arrived, writes the drift report (CSV/JSON table, PNG
plot, HTML page under `$CTCD_HOME/reports/monitoring/`) and logs it to MLflow as a run of
the `model_monitoring` experiment. With fewer than `min_samples` served rows it says so,
keeps its window open and does not retrain.

`retraining_needed` lets the run go on only when drift passed the thresholds, retraining
is not cooling down, and no `continuous_training` run is already queued or running;
`trigger_retraining` then starts `continuous_training` with the reason in its `conf`
(`trigger_reason`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, get_current_context, task

from ctcd.monitoring.params import airflow_params

RETRAIN_DAG_ID = "continuous_training"
WATERMARK_PREFIX = "ctcd_monitoring__"


def _load_watermark(model_name: str) -> dict[str, Any]:
    import json

    from airflow.sdk import Variable

    return dict(json.loads(Variable.get(WATERMARK_PREFIX + model_name, default="{}")))


def _save_watermark(model_name: str, watermark: dict[str, Any]) -> None:
    import json

    from airflow.sdk import Variable

    Variable.set(WATERMARK_PREFIX + model_name, json.dumps(watermark),
                 description=f"model_monitoring watermark of {model_name}")


@dag(
    dag_id="model_monitoring",
    schedule="@hourly",
    catchup=False,
    # Watching is cheap and harmless (it retrains only on drift): on from the start.
    is_paused_upon_creation=False,
    max_active_runs=1,
    tags=["ctcd", "monitoring"],
    doc_md=__doc__,
    params=airflow_params(),
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(minutes=20),
    },
)
def model_monitoring() -> None:
    @task
    def check() -> dict[str, Any]:
        from ctcd.hooks.mlflow_tracking import MlflowHook
        from ctcd.monitoring import labels, pipeline, served
        from ctcd.monitoring.params import parse_params
        from ctcd.settings import get_settings
        from ctcd.tasks import fail_without_retry

        context = get_current_context()
        with fail_without_retry():
            params = parse_params(context["params"])
        settings = get_settings()
        model_name = params.model_name or settings.model_name
        watermark = _load_watermark(model_name)
        ti = context["ti"]
        result = pipeline.check(
            params, watermark, client=MlflowHook().client,
            request_log=served.default_log_path(), labels_path=labels.default_labels_path(),
            reports_dir=settings.reports_dir / "monitoring", model_name=model_name,
            lineage={"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id},
        )
        if result.watermark != watermark:
            _save_watermark(model_name, result.watermark)
        print(f"Monitoring: {result.status}: {result.reason}")
        return result.as_dict()

    @task.short_circuit
    def retraining_needed(result: dict[str, Any]) -> bool:
        if not result["retrain"]:
            print(f"No retraining: {result['status']}: {result['reason']}")
            return False
        active = get_current_context()["ti"].get_dr_count(
            RETRAIN_DAG_ID, states=["queued", "running"])
        if active:
            print(f"No retraining: {RETRAIN_DAG_ID} already has {active} run(s) queued or "
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
        trigger_dag_id=RETRAIN_DAG_ID,
        conf={"trigger_reason": "{{ ti.xcom_pull(task_ids='check')['reason'] }}"},
        wait_for_completion=False,
        retries=2,
    )
    retraining_needed(result) >> trigger


model_monitoring()
