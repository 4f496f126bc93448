"""The batch_inference steps, free of Airflow task plumbing: ``plan`` picks the model version
and the partitions to score; ``score_partition`` scores one partition in chunks into the sink,
replacing what an earlier run wrote for it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from ctcd.batch.params import BatchInferenceParams, parse_params
from ctcd.data.spec import DatasetSpec, load_spec
from ctcd.errors import DataValidationError, InvalidParams, ModelServerUnavailable
from ctcd.tracking import Tracking

if TYPE_CHECKING:
    from ctcd.serving.schema import InputSchema


class TooManyRejects(DataValidationError):
    """More of a partition's rows were rejected than ``max_reject_share`` allows."""


def _model_name(params: BatchInferenceParams) -> str:
    if not params.model_name:
        raise InvalidParams("Invalid batch_inference configuration: parameter 'model_name' is "
                            "empty: name the registered model to score with (each model's "
                            "batch inference DAG sets it from its model file).")
    return params.model_name


def _source(params: BatchInferenceParams, spec: DatasetSpec) -> Any:
    from ctcd.data.sources import LandingSource, SqlSource, default_scoring_uri

    if params.source == "sql":
        query = params.sql_query or f"SELECT * FROM {spec.name}_scoring"
        return SqlSource(params.sql_conn_id, query, spec)
    uri = params.landing_uri or default_scoring_uri(spec.name)
    return LandingSource(uri, spec, conn_id=params.landing_conn_id or None)


def _sink(params: BatchInferenceParams, spec: DatasetSpec, run_id: str) -> Any:
    from ctcd.batch.sinks import ParquetSink, SqlSink
    from ctcd.settings import get_settings

    if params.sink == "parquet":
        uri = params.output_uri or f"file://{get_settings().home / 'predictions' / spec.name}/"
        return ParquetSink(uri, dataset=spec.name, run_id=run_id)
    return SqlSink(params.output_conn_id, dataset=spec.name, run_id=run_id,
                   id_column=spec.id_column, table=params.predictions_table,
                   rejects_table=params.rejects_table)


def _server(model_name: str, service_id: str | None = None) -> Any:
    from ctcd.deployers import get_deployer

    found = get_deployer().find_model_server(model_name=model_name, service_id=service_id,
                                             running=True)
    if not found:
        raise ModelServerUnavailable(
            f"no running model server serves {model_name!r}: deploy it (continuous_training, "
            "or `ctcd models deploy`) or use mode=in_process")
    return found[0]


def _landed(events: Sequence[Mapping[str, Any]]) -> set[date]:
    """The partitions named by scoring Asset events' extras (``date`` or ``partitions``)."""
    days: set[date] = set()
    for extra in events:
        named = extra.get("partitions") or ([extra["date"]] if extra.get("date") else [])
        if isinstance(named, str):
            named = [named]
        for value in named:
            try:
                days.add(date.fromisoformat(str(value)))
            except ValueError:
                raise InvalidParams(
                    f"a scoring Asset event names partition {value!r}, not a YYYY-MM-DD date: "
                    "post events with extra {\"date\": \"YYYY-MM-DD\"} or "
                    "{\"partitions\": [...]}") from None
    return days


def plan(conf: Mapping[str, Any], event: Mapping[str, Any] | None, tracking: Tracking,
         run_id: str = "", landed: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The version to score with and the partitions to score (ISO dates, oldest first).

    ``event`` is the extra of the serving Asset event that started the run, if any: its
    ``version`` is used unless ``model_version`` is given. ``landed`` are the extras of the
    scoring Asset events that started it: a run started only by them scores exactly the
    partitions they name (``date`` or ``partitions``), scored before or not.
    """
    params = parse_params(conf)
    spec = load_spec(params.dataset)
    name = _model_name(params)
    service_id = None
    if params.mode == "endpoint":
        handle = _server(name)
        service_id, version = handle.service_id, handle.model_version
    else:
        version = params.model_version or str((event or {}).get("version") or "")
        version = version or tracking.champion_version(name) or ""
        if not version:
            raise InvalidParams(f"model {name!r} has no champion yet: train one "
                                "(continuous_training) or give model_version")
    days = _source(params, spec).partitions()
    named = set(params.partitions) or _landed(landed)
    missing = sorted(named - set(days))
    if missing:
        origin = "partitions" if params.partitions else "the scoring Asset events' partitions"
        raise InvalidParams(f"{origin} {[d.isoformat() for d in missing]} are not in the "
                            f"source (it has {[d.isoformat() for d in days]})")
    chosen = sorted(named)
    if not params.partitions and (not named or event):  # the schedule, a trigger, a champion
        done = _sink(params, spec, run_id).scored(version)
        newest = [d for d in days if d not in done][-params.max_partitions:]
        chosen = sorted(named | set(newest))
    return {"model_name": name, "version": version, "service_id": service_id,
            "partitions": [d.isoformat() for d in chosen]}


def _chunks(source: Any, day: date, chunk_rows: int, schema: InputSchema) -> Iterator[Any]:
    """Chunks of at most ``chunk_rows`` rows, read lazily. Lines of a landed CSV file that do
    not parse come with them (they become rejects, the rest is scored), and its feature
    columns (``schema``'s) are read as text and parsed row by row, so a bad value rejects
    its row."""
    from ctcd.batch.files import chunks_of, text_features
    from ctcd.data.csv_reader import BadLine
    from ctcd.data.sources import LandingSource

    bad: list[BadLine] = []
    if isinstance(source, LandingSource):
        items = source.batches(day, on_bad_line=bad.append, text_columns=schema.names)
    else:
        items = source.batches(day)
    yield from chunks_of(items, chunk_rows, bad, strings=text_features(schema))


def score_partition(conf: Mapping[str, Any], planned: Mapping[str, Any], day: str,
                    run_id: str, tracking: Tracking) -> dict[str, Any]:
    """Score partition ``day`` into the sink in one replacing write; returns the counts.
    Raises :class:`TooManyRejects` after writing when the rejected share is too high."""
    from ctcd.batch.endpoint import RemotePredictor, endpoint_model
    from ctcd.batch.model import ScoringModel, load_version
    from ctcd.batch.score import reason_counts, score_chunks

    params = parse_params(conf)
    spec = load_spec(params.dataset)
    partition = date.fromisoformat(day)
    name, version = str(planned["model_name"]), str(planned["version"])
    model: ScoringModel
    remote: RemotePredictor | None = None
    if params.mode == "endpoint":
        model = endpoint_model(_server(name, planned.get("service_id")),
                               batch_rows=params.batch_rows, concurrency=params.concurrency,
                               attempts=params.attempts)
        remote = model.model  # type: ignore[assignment]
    else:
        with tracking.active():
            model = load_version(name, version, batch=True)
    started, when = time.perf_counter(), datetime.now(UTC)
    rows = scored = rejected = 0
    versions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    chunks = _chunks(_source(params, spec), partition, params.chunk_rows, model.schema)
    try:
        # Reading and predicting run in threads, overlapped; the sink (its connection, its
        # transaction) stays in this thread.
        with _sink(params, spec, run_id).partition(partition) as writer, \
                score_chunks(model, chunks, spec=spec, scored_at=when) as scored_chunks:
            for chunk in scored_chunks:
                writer.write(chunk)
                rows += chunk.rows
                scored += len(chunk.predictions)
                rejected += len(chunk.rejects)
                versions.update({str(v): int(n) for v, n in
                                 chunk.predictions["model_version"].value_counts().items() if n})
                reasons.update(reason_counts(chunk.rejects))
    finally:
        if remote is not None:
            remote.close()
    summary = {
        "partition": day, "rows": rows, "scored": scored, "rejected": rejected,
        "versions": dict(versions), "reject_reasons": dict(reasons), "mode": params.mode,
        "seconds": round(time.perf_counter() - started, 3),
        "requests": remote.requests if remote else 0, "retries": remote.retried if remote else 0,
    }
    share = rejected / rows if rows else 0.0
    if share > params.max_reject_share:
        raise TooManyRejects(
            f"partition {day}: {rejected} of {rows} rows rejected ({share:.1%}), above "
            f"max_reject_share {params.max_reject_share:.1%}; by field: {dict(reasons)}. The "
            "good rows are scored and the rejects kept with their reasons; fix the data and "
            "re-run the partition, or raise max_reject_share.")
    return summary
