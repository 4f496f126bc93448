"""
### Data producer (demo)

Lands one day's partition of the churn data set in its landing location
(`date=YYYY-MM-DD/part-0.parquet` under `file://$CTCD_HOME/landing/churn/` by default) and
updates the data set's Asset `ctcd://datasets/churn`, which starts `continuous_training`.
Your own feed does the same: write the partition, then update the Asset (from a DAG like
this one, or `POST /api/v2/assets/events`).

Params: `date` (empty: the run's logical date), `rows`, `drift` (0 to 1), `corruption`
(a data fault validation must catch), `labels` (false: labels land apart, delayed),
`landing_uri`, `format` (parquet or csv). The same as a command: `ctcd data produce`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from ctcd.data.assets import dataset_asset

DATASET = "churn"
DATASET_ASSET = dataset_asset(DATASET)
CORRUPTIONS = ["none", "nulls", "out_of_range", "missing_column", "wrong_type", "unseen_category"]


@dag(
    dag_id="data_producer",
    schedule=None,
    catchup=False,
    tags=["ctcd", "data", "demo"],
    doc_md=__doc__,
    params={
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
    @task(outlets=[DATASET_ASSET])
    def produce() -> dict[str, Any]:
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
        )
        print(f"Landed {produced.rows} rows of {DATASET} for {day} at {produced.partition}")
        context["outlet_events"][DATASET_ASSET].extra = {
            "date": day.isoformat(),
            "partition": produced.partition,
            "rows": produced.rows,
        }
        return {"date": day.isoformat(), **produced.__dict__}

    produce()


data_producer()
