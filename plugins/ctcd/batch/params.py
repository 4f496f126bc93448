"""The batch_inference run parameters: one pydantic model feeds the DAG's Params form
(``ctcd.params.airflow_params``) and the in-task check. Cheap to import (pydantic
only): the DAG file reads it at parse time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class BatchInferenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: str = Field(default="churn", pattern=r"^[A-Za-z0-9_.-]+$",
                         description="Data set to score: its spec include/datasets/<dataset>.yaml.")
    model_name: str = Field(default="", description="Registered model to score with (the "
                            "model file's, in each model's batch inference DAG).")
    model_version: str = Field(
        default="", pattern=r"^\d*$",
        description="Version to score with; empty: the champion (a run started by a new "
        "champion's Asset event uses the event's version).")
    mode: Literal["in_process", "endpoint"] = Field(
        default="in_process",
        description="`in_process`: load models:/<name>@champion (model as data); `endpoint`: "
        "send rows to the model server serving the model (model as a service).")
    source: Literal["landing", "sql"] = Field(
        default="landing", description="Where the rows to score come from.")
    landing_uri: str = Field(
        default="", description="ObjectStoragePath URI of date=YYYY-MM-DD/*.parquet|*.csv "
        "partitions to score; empty: file://$CTCD_HOME/scoring/<dataset>/.")
    landing_conn_id: str = Field(default="", description="Connection with credentials for "
                                 "landing_uri (s3, gs).")
    sql_conn_id: str = Field(default="ctcd_data", description="Connection of the SQL source.")
    sql_query: str = Field(
        default="", description="Query returning the rows to score, with the data set's "
        "partition column; empty: SELECT * FROM <dataset>_scoring.")
    partitions: list[date] = Field(
        default_factory=list,
        description="Partitions (YYYY-MM-DD) to score; empty: the newest `max_partitions` "
        "partitions not yet scored by the version in use.")
    max_partitions: int = Field(default=7, ge=1, le=366,
                                description="Most partitions one run scores when none are named.")
    sink: Literal["sql", "parquet"] = Field(
        default="sql", description="`sql`: tables through output_conn_id; `parquet`: files "
        "under output_uri.")
    output_conn_id: str = Field(default="ctcd_predictions", description="Connection of the "
                                "predictions database (common.sql: SQLite, PostgreSQL, ...).")
    predictions_table: str = Field(default="predictions", description="Predictions table.")
    rejects_table: str = Field(default="prediction_rejects", description="Rejected rows table.")
    output_uri: str = Field(default="", description="Parquet output directory; empty: "
                            "file://$CTCD_HOME/predictions/<dataset>/.")
    chunk_rows: int = Field(default=50_000, ge=1, description="Rows read and scored at a time.")
    batch_rows: int = Field(default=1_000, ge=1, description="Rows per request (endpoint).")
    concurrency: int = Field(default=4, ge=1, le=64,
                             description="Requests in flight at once (endpoint).")
    attempts: int = Field(default=4, ge=1, le=20, description="Tries per request on a 5xx "
                          "answer or a connection error (endpoint).")
    max_reject_share: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Fail a partition's task when more than this share of its rows is rejected "
        "(the predictions and rejects are written either way).")


def parse_params(conf: Mapping[str, Any]) -> BatchInferenceParams:
    """Validate a run's params; raise InvalidParams naming each bad parameter."""
    from ctcd.params import validate_params

    return validate_params(BatchInferenceParams, conf, "batch_inference")
