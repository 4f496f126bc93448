"""``ctcd predict``: score a CSV or Parquet file with a registered model, in chunks, with a
progress bar; predictions go beside the input with the model name and version in each row."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ctcd.batch.files import count_rows
from ctcd.batch.score import DEFAULT_CHUNK_ROWS, score_file
from ctcd.console import err, fail
from ctcd.errors import CtcdError


def predict(
    source: Annotated[Path, typer.Argument(help="CSV (.csv, .csv.gz) or Parquet file to score.",
                                           show_default=False)],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="NAME (its champion), NAME@ALIAS or NAME/VERSION.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where predictions go (.parquet or .csv); default "
        "<input>.predictions.parquet.")] = None,
    rejects: Annotated[Path | None, typer.Option(
        help="Where rows that fail the signature go, with the reason; default beside the "
        "output, <name>.rejects.parquet.")] = None,
    chunk_rows: Annotated[int, typer.Option(help="Rows read and scored at a time.")]
    = DEFAULT_CHUNK_ROWS,
    dataset: Annotated[str | None, typer.Option(
        help="Also reject values outside this data set spec's ranges and categories.")] = None,
    max_reject_share: Annotated[float, typer.Option(
        help="Exit with status 3 when more than this share of rows is rejected.")] = 1.0,
    tracking_uri: Annotated[str | None, typer.Option(
        envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server.")] = None,
) -> None:
    """Score a CSV or Parquet file with a registered model, in chunks, with a progress bar;
    rows that fail the model signature go to a rejects file with the reason."""
    from ctcd.batch.model import ModelRef, load_version, resolve_version
    from ctcd.data.spec import load_spec
    from ctcd.settings import get_settings

    try:
        uri = tracking_uri or get_settings().tracking_uri()
        os.environ["MLFLOW_TRACKING_URI"] = uri  # the one registry of this command
        ref = ModelRef.parse(model)
        spec = load_spec(dataset) if dataset else None
        with err.status(f"loading {ref}..."):
            version = resolve_version(ref, uri)
            scoring = load_version(ref.name, version, batch=True)
        total = count_rows(source) if source.is_file() else None
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("rows"), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=not err.is_terminal) as bar:
            task = bar.add_task(f"{ref.name} v{version}", total=total)
            summary = score_file(scoring, source, output, rejects=rejects,
                                 chunk_rows=chunk_rows, spec=spec,
                                 progress=lambda n: bar.advance(task, n))
            # the total counted line ends: empty lines, quoted line ends and unparsable
            # lines are not rows scored; end the bar at what was read
            bar.update(task, total=summary.rows, completed=summary.rows)
    except CtcdError as error:
        raise fail(error) from error
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    err.print(f"scored {summary.scored:,} of {summary.rows:,} rows with {summary.model_name} "
              f"version {summary.model_version} in {summary.seconds:.1f}s ({rate:,.0f} rows/s)"
              f" -> {summary.output}", highlight=False)
    if summary.rejected:
        top = ", ".join(f"{k} ({n})" for k, n in
                        sorted(summary.reasons.items(), key=lambda kv: -kv[1])[:5])
        err.print(f"[yellow]rejected {summary.rejected:,} rows[/yellow] -> {summary.rejects} "
                  f"(by field: {top})", highlight=False)
        if summary.rejected_share > max_reject_share:
            err.print(f"[red]error:[/red] {summary.rejected_share:.1%} of rows rejected, over "
                      f"--max-reject-share {max_reject_share:.1%}", highlight=False)
            raise typer.Exit(code=3)
