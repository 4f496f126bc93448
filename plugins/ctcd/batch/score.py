"""Score a file, or any stream of frames, in bounded memory: read a chunk -> check its rows
against the signature (bad ones become rejects with a reason) -> predict the good ones in one
call -> write. The three steps overlap (:class:`~ctcd.batch.pipelined.Pipelined`): a reader
thread reads ahead, a scoring thread checks and predicts, and the caller's thread builds the
output and writes it, with a few chunks at most between them, so peak memory stays a few
chunks whatever the input's size. pyarrow, pandas' I/O and the model's own predict release
the GIL in their heavy parts, so reading and writing run while a chunk is predicted.

This module is the orchestration; a chunk's checks, prediction and output frames are in
:mod:`ctcd.batch.chunk`, reading and writing files in :mod:`ctcd.batch.files`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd

from ctcd.batch.chunk import Chunk, Predicted, ScoredChunk, assemble, predict_chunk
from ctcd.batch.files import (
    FrameWriter,
    default_output,
    default_rejects,
    file_kind,
    read_chunks,
)
from ctcd.batch.model import ScoringModel
from ctcd.batch.pipelined import PIPELINE_DEPTH, Pipelined
from ctcd.data.spec import DatasetSpec
from ctcd.errors import InvalidParams

DEFAULT_CHUNK_ROWS: Final = 100_000

Progress = Callable[[int], None]


@dataclass
class Summary:
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    chunks: int = 0
    seconds: float = 0.0
    model_name: str = ""
    model_version: str = ""
    output: str | None = None
    rejects: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)  # first field of a reason -> count

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0


@contextmanager
def score_chunks(model: ScoringModel, chunks: Iterable[Chunk], *,
                 spec: DatasetSpec | None = None, scored_at: datetime | None = None,
                 extra: Mapping[str, Any] | None = None,
                 depth: int = PIPELINE_DEPTH) -> Iterator[Iterator[ScoredChunk]]:
    """Scored chunks of ``chunks``, read ahead and predicted in threads (:class:`Pipelined`);
    the output frames are built in the caller's thread as it iterates."""
    when = scored_at or datetime.now(UTC)
    first = 0

    def predict(chunk: Chunk) -> Predicted:  # one worker thread: ``first`` needs no lock
        nonlocal first
        predicted = predict_chunk(model, chunk.frame, first_row=first, spec=spec,
                                  text=chunk.text, bad_lines=chunk.bad_lines)
        first += len(chunk.frame)
        return predicted

    with Pipelined(chunks, predict, depth=depth) as predicted:
        yield (assemble(model, p, when, extra) for p in predicted)


def reason_counts(rejects: pd.DataFrame) -> dict[str, int]:
    """Rejects per field (a reason's text before its first colon)."""
    if not len(rejects):
        return {}
    fields = rejects["reason"].astype(str).str.split(":", n=1).str[0]
    return {str(k): int(n) for k, n in fields.value_counts().items()}


def score_file(
    model: ScoringModel,
    source: Path,
    output: Path | None = None,
    *,
    rejects: Path | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    spec: DatasetSpec | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Score ``source`` (Parquet or CSV) into ``output`` (default
    ``<source>.predictions.parquet``); rejects go to ``rejects`` (default beside the output,
    ``<name>.rejects.parquet``), which is removed when a run has none."""
    if chunk_rows < 1:
        raise InvalidParams(f"chunk_rows must be at least 1, got {chunk_rows}")
    if not source.is_file():
        raise InvalidParams(f"{source}: no such file")
    output = output or default_output(source)
    rejects = rejects or default_rejects(output)
    file_kind(source)
    file_kind(output)  # refuse unknown output types before any work
    file_kind(rejects)
    summary = Summary(model_name=model.name, model_version=model.version,
                      output=str(output), rejects=str(rejects))
    started, when = time.perf_counter(), datetime.now(UTC)
    out, bad = FrameWriter(output), FrameWriter(rejects)
    empty: pd.DataFrame | None = None  # the columns predictions have, for an all-rejected run
    try:
        with score_chunks(model, read_chunks(source, chunk_rows, model.schema), spec=spec,
                          scored_at=when) as chunks:
            for chunk in chunks:
                if len(chunk.predictions):
                    out.write(chunk.predictions)
                elif empty is None:
                    empty = chunk.predictions.iloc[:0]
                if len(chunk.rejects):
                    bad.write(chunk.rejects)
                    for key, count in reason_counts(chunk.rejects).items():
                        summary.reasons[key] = summary.reasons.get(key, 0) + count
                summary.rows += chunk.rows
                summary.scored += len(chunk.predictions)
                summary.rejected += len(chunk.rejects)
                summary.chunks += 1
                if progress is not None:
                    progress(chunk.rows)
        if not out.rows and empty is not None:
            out.write(empty)  # every row rejected: an empty file with the columns it has
    except BaseException:
        out.abort()
        bad.abort()
        raise
    out.commit()
    bad.commit()
    if not bad.rows:
        rejects.unlink(missing_ok=True)
        summary.rejects = None
    summary.seconds = time.perf_counter() - started
    return summary
