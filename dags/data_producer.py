"""
### Data producer (demo)

Lands one day's partition of the churn data set and updates an Asset (`route` picks the
task by `purpose`):

- `training` (`land_training`): labelled rows in the landing location
  (`date=YYYY-MM-DD/part-0.parquet` under `file://$CTCD_HOME/landing/churn/` by default);
  updates `ctcd://datasets/churn`, which starts `continuous_training`.
- `scoring` (`land_scoring`): unlabelled rows in the scoring location
  (`file://$CTCD_HOME/scoring/churn/` by default); updates `ctcd://datasets/churn/scoring`
  with the partition's date, which starts `batch_inference` on that partition.

Your own feed does the same: write the partition, then update the Asset (from a DAG like
this one, or `POST /api/v2/assets/events`).

Params: `purpose`, `date` (empty: the run's logical date), `rows`, `drift` (0 to 1),
`corruption` (a data fault validation must catch, or rows scoring must reject), `labels`
(training; false: labels land apart, delayed), `landing_uri`, `format` (parquet or csv). The
same as a command: `ctcd data produce [--for scoring]`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from ctcd.batch.assets import scoring_asset
from ctcd.data.assets import dataset_asset

DATASET = "churn"
DATASET_ASSET = dataset_asset(DATASET)
SCORING_ASSET = scoring_asset(DATASET)
CORRUPTIONS = ["none", "nulls", "out_of_range", "missing_column", "wrong_type", "unseen_category"]


@dag(
    dag_id="data_producer",
    schedule=None,
    catchup=False,
    tags=["ctcd", "data", "demo"],
    doc_md=__doc__,
    params={
        "purpose": Param("training", enum=["training", "scoring"],
                         description="training: labelled rows, starts continuous_training; "
                         "scoring: unlabelled rows, starts batch_inference."),
        "date": Param(
            None, type=["string", "null"], format="date", description="Partition date."
        ),
        "rows": Param(20_000, type="integer", minimum=1, maximum=5_000_000, description="Rows."),
        "drift": Param(0.0, type="number", minimum=0, maximum=1, description="Drift, 0 to 1."),
        "corruption": Param("none", enum=CORRUPTIONS, description="A data fault to inject."),
        "labels": Param(True, type="boolean", description="Write labels in the partition."),
        "landing_uri": Param("", type="string", description="Empty: the default location."),
        "format": Param("parquet", enum=["parquet", "csv"], description="File format."),
    },
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(seconds=10)},
)
def data_producer() -> None:
    @task.branch
    def route() -> str:
        purpose = get_current_context()["params"]["purpose"]
        return "land_scoring" if purpose == "scoring" else "land_training"

    @task(outlets=[DATASET_ASSET])
    def land_training() -> dict[str, Any]:
        return _land(DATASET_ASSET, "training")

    @task(outlets=[SCORING_ASSET])
    def land_scoring() -> dict[str, Any]:
        return _land(SCORING_ASSET, "scoring")

    route() >> [land_training(), land_scoring()]


def _land(asset: Any, purpose: str) -> dict[str, Any]:
    """Land the partition the params describe; put its date, path and rows in ``asset``'s
    event (``batch_inference`` scores the partition a scoring event names)."""
    from datetime import date

    from ctcd.data.producer import produce as land
    from ctcd.data.spec import load_spec

    context = get_current_context()
    params = context["params"]
    logical = context.get("logical_date")
    day = (
        date.fromisoformat(params["date"])
        if params.get("date")
        else (logical.date() if logical else date.today())
    )
    produced = land(
        day,
        int(params["rows"]),
        spec=load_spec(DATASET),
        drift=float(params["drift"]),
        corruption=params["corruption"],
        labels=bool(params["labels"]),
        landing_uri=params["landing_uri"] or None,
        fmt=params["format"],
        purpose="scoring" if purpose == "scoring" else "training",
    )
    what = "to score" if purpose == "scoring" else "to train on"
    print(f"Landed {produced.rows} rows of {DATASET} {what} for {day} at {produced.partition}")
    context["outlet_events"][asset].extra = {
        "date": day.isoformat(),
        "partition": produced.partition,
        "rows": produced.rows,
    }
    return {"date": day.isoformat(), **produced.__dict__}


data_producer()
