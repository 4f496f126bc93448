"""
### Batch inference

Scores the rows of a data set's scoring partitions with the model's champion and writes each
prediction with the model name, the version that made it, the DAG run id and the scoring time.
One DAG per model file, `<model>_batch_inference`. Runs when a new champion goes live (the
training DAG's serving Asset, `ctcd://models/<model name>`; the event's version is used),
when a producer lands rows to score (`ctcd://datasets/<dataset>/scoring`; the event's extra
names the partition: `{"date": "YYYY-MM-DD"}` or `{"partitions": [...]}`), on the model
file's `batch.schedule` (default 02:00 UTC), or when triggered.

`plan` (checks the parameters; picks the version and the partitions: those named in
`partitions`, else those the scoring events name, else the newest `max_partitions` not yet
scored by that version; a new champion's run adds those to the events' partitions) ->
`score_partition` (mapped: one task per partition, so a Celery or Kubernetes executor
spreads them over workers; reads and scores in `chunk_rows` chunks; rows failing the
signature or the data set's spec go to the rejects table with the reason; the partition's
previous predictions are replaced in one transaction; fails above `max_reject_share`) ->
`report` (totals of the run).

`mode`: `in_process` loads `models:/<name>/<version>` from the registry (model as data);
`endpoint` sends batched requests to the running model server (model as a service; bounded
concurrency, retries on 5xx and connection errors only) and records the version named by each
answer's `X-Model-Version` header. `sink`: `sql` writes the `predictions` and
`prediction_rejects` tables through the connection `output_conn_id` (SQLite, PostgreSQL);
`parquet` writes `date=YYYY-MM-DD/{predictions,rejects}.parquet` under `output_uri`.

**Starts paused**, as every new DAG does here (Airflow's `dags_are_paused_at_creation`):
it writes predictions, so a person turns it on once its sink points at the right
database. While paused it runs nothing, not even when a promotion's Asset event or a
landed scoring partition would start it (Airflow queues no run for a paused DAG). Unpause
it in the DAG list, or `PATCH /api/v2/dags/<model>_batch_inference` with
`{"is_paused": false}`. `make demo` unpauses the churn model's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task

from ctcd.batch.assets import scoring_asset, serving_asset
from ctcd.batch.params import BatchInferenceParams
from ctcd.models import ModelDefinition, load_models
from ctcd.models.dags import batch_schedule, default_args, doc, tags
from ctcd.params import airflow_params


def _event_extras(asset: Any) -> list[dict[str, Any]]:
    """The extras of ``asset``'s events that started this run, oldest first."""
    events = get_current_context().get("triggering_asset_events") or {}
    for key, found in events.items():
        if getattr(key, "uri", None) == asset.uri:
            return [dict(event.extra or {}) for event in sorted(found, key=lambda e: e.timestamp)]
    return []


def batch_dag(model: ModelDefinition) -> Any:
    serving = serving_asset(model.model_name)
    scoring = scoring_asset(model.dataset)
    defaults = {"dataset": model.dataset, "model_name": model.model_name, **model.batch.params}

    @dag(
        dag_id=model.batch_dag_id,
        schedule=batch_schedule(model),
        catchup=False,
        max_active_runs=1,
        tags=tags(model, "inference", "batch"),
        description=(f"Scores {model.dataset} scoring partitions with {model.model_name}'s "
                     "champion; starts paused: unpause it to score on each promotion"),
        doc_md=doc(model, __doc__ or ""),
        params=airflow_params(BatchInferenceParams, defaults),
        default_args=default_args(model, timeout=timedelta(hours=2)),
    )
    def batch_inference() -> None:
        @task
        def plan() -> dict[str, Any]:
            from ctcd.pipelines import batch_inference as pipeline
            from ctcd.tasks import fail_without_retry
            from ctcd.tracking import get_tracking

            context = get_current_context()
            champions = _event_extras(serving)
            with fail_without_retry():
                planned = pipeline.plan(dict(context["params"]),
                                        champions[-1] if champions else None,
                                        get_tracking(), context["run_id"],
                                        landed=_event_extras(scoring))
            print(f"Scoring {planned['partitions'] or 'nothing new'} with "
                  f"{planned['model_name']} version {planned['version']}")
            return planned

        @task
        def partitions(planned: dict[str, Any]) -> list[str]:
            return list(planned["partitions"])

        @task(max_active_tis_per_dagrun=4)
        def score_partition(day: str, planned: dict[str, Any]) -> dict[str, Any]:
            from ctcd.pipelines import batch_inference as pipeline
            from ctcd.tasks import fail_without_retry
            from ctcd.tracking import get_tracking

            context = get_current_context()
            with fail_without_retry():
                summary = pipeline.score_partition(dict(context["params"]), planned, day,
                                                   context["run_id"], get_tracking())
            print(f"Partition {day}: {summary}")
            return summary

        @task
        def report(summaries: Any) -> dict[str, int]:
            totals = {"partitions": 0, "rows": 0, "scored": 0, "rejected": 0}
            for summary in summaries:
                totals["partitions"] += 1
                for key in ("rows", "scored", "rejected"):
                    totals[key] += int(summary[key])
            print(f"Batch inference: {totals}")
            return totals

        planned = plan()
        scored = score_partition.partial(planned=planned).expand(day=partitions(planned))
        report(scored)

    return batch_inference()


for _model in load_models().models.values():
    if _model.batch.enabled:
        globals()[_model.batch_dag_id] = batch_dag(_model)
