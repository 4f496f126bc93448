"""
### Data producer (demo)

Lands one day's partition of an example data set (`dataset`: churn, wine or diabetes) and
updates its Asset (`route` picks the task by `purpose`):

- `training` (`land_training`): labelled rows in the landing location
  (`date=YYYY-MM-DD/part-0.parquet` under `file://$CTCD_HOME/landing/<dataset>/` by default);
  updates `ctcd://datasets/<dataset>`, which starts the training DAG of every model of that
  data set (e.g. `churn_training`).
- `scoring` (`land_scoring`): unlabelled rows in the scoring location
  (`file://$CTCD_HOME/scoring/<dataset>/` by default); updates
  `ctcd://datasets/<dataset>/scoring` with the partition's date, which starts the batch
  inference DAGs of that data set's models on that partition.

The Asset is named at run time, through the Asset alias `ctcd-landed-partitions`.

Your own feed does the same: write the partition, then update the Asset (from a DAG like
this one, or `POST /api/v2/assets/events`).

Params: `dataset`, `purpose`, `date` (empty: the run's logical date), `rows`, `drift` (0 to 1),
`corruption` (a data fault validation must catch, or rows scoring must reject), `labels`
(training; false: labels land apart, delayed), `landing_uri`, `format` (parquet or csv). The
same as a command: `ctcd data produce [--for scoring]`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import AssetAlias, Param, dag, get_current_context, task

DATASETS = ["churn", "wine", "diabetes"]  # the data sets the demo producer can generate
LANDED = AssetAlias("ctcd-landed-partitions")
CORRUPTIONS = ["none", "nulls", "out_of_range", "missing_column", "wrong_type", "unseen_category"]


@dag(
    dag_id="data_producer",
    schedule=None,
    catchup=False,
    tags=["ctcd", "data", "demo"],
    doc_md=__doc__,
    params={
        "dataset": Param("churn", enum=DATASETS, description="Data set to land a partition of."),
        "purpose": Param("training", enum=["training", "scoring"],
                         description="training: labelled rows, starts continuous_training; "
                         "scoring: unlabelled rows, starts batch_inference."),
        "date": Param(
            None, type=["string", "null"], format="date", description="Partition date."
        ),
        "rows": Param(20_000, type="integer", minimum=1, maximum=5_000_000, description="Rows."),
        "drift": Param(0.0, type="number", minimum=0, maximum=1, description="Drift, 0 to 1."),
        "corruption": Param("none", enum=CORRUPTIONS, description="A data fault to inject "
                            "(unseen_category: churn only)."),
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

    @task(outlets=[LANDED])
    def land_training() -> dict[str, Any]:
        return _land("training")

    @task(outlets=[LANDED])
    def land_scoring() -> dict[str, Any]:
        return _land("scoring")

    route() >> [land_training(), land_scoring()]


def _land(purpose: str) -> dict[str, Any]:
    """Land the partition the params describe; put its date, path and rows in the data set's
    Asset event (batch inference scores the partition a scoring event names)."""
    from datetime import date

    from ctcd.batch.assets import scoring_asset
    from ctcd.data.assets import dataset_asset
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
    dataset = str(params["dataset"])
    produced = land(
        day,
        int(params["rows"]),
        spec=load_spec(dataset),
        drift=float(params["drift"]),
        corruption=params["corruption"],
        labels=bool(params["labels"]),
        landing_uri=params["landing_uri"] or None,
        fmt=params["format"],
        purpose="scoring" if purpose == "scoring" else "training",
    )
    what = "to score" if purpose == "scoring" else "to train on"
    print(f"Landed {produced.rows} rows of {dataset} {what} for {day} at {produced.partition}")
    asset = scoring_asset(dataset) if purpose == "scoring" else dataset_asset(dataset)
    context["outlet_events"][LANDED].add(asset, extra={
        "date": day.isoformat(),
        "partition": produced.partition,
        "rows": produced.rows,
    })
    return {"date": day.isoformat(), **produced.__dict__}


data_producer()
