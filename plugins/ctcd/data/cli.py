"""``ctcd data ...``: land demo partitions and derive expectation suites from specs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from ctcd.data.churn import CORRUPTIONS
from ctcd.data.spec import load_spec
from ctcd.errors import CtcdError

app = typer.Typer(help="Data sets: produce demo partitions, derive expectation suites.",
                  no_args_is_help=True)

Dataset = Annotated[str, typer.Option(help="Data set (spec include/datasets/<name>.yaml).")]


@app.command()
def produce(
    day: Annotated[datetime | None, typer.Option(
        "--date", formats=["%Y-%m-%d"], help="Partition date; default today (UTC).")] = None,
    rows: Annotated[int, typer.Option(min=1, help="Rows in the partition.")] = 20_000,
    drift: Annotated[float, typer.Option(min=0.0, max=1.0, help="Simulated drift, 0..1.")] = 0.0,
    corruption: Annotated[str, typer.Option(
        help=f"Inject a data fault: {', '.join(CORRUPTIONS)}.")] = "none",
    labels: Annotated[bool, typer.Option(
        help="Write the label in the partition (--no-labels: apart, as delayed labels).")] = True,
    landing_uri: Annotated[str | None, typer.Option(
        help="Landing location; default file://$CTCD_HOME/landing/<dataset>/ (scoring: "
        "file://$CTCD_HOME/scoring/<dataset>/).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    purpose: Annotated[str, typer.Option(
        "--for", help="training (labelled rows to train on) or scoring (unlabelled rows for "
        "batch_inference).")] = "training",
    dataset: Dataset = "churn",
) -> None:
    """Generate one day's partition and land it (the demo's stand-in for a real feed)."""
    from ctcd.data.producer import produce as land

    if purpose not in ("training", "scoring"):
        raise typer.BadParameter("must be training or scoring", param_hint="--for")
    if corruption not in CORRUPTIONS:
        raise typer.BadParameter(
            f"must be one of {', '.join(CORRUPTIONS)}", param_hint="--corruption"
        )
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("must be parquet or csv", param_hint="--format")
    try:
        produced = land(
            (day or datetime.now(UTC)).date(),
            rows,
            spec=load_spec(dataset),
            drift=drift,
            corruption=corruption,
            labels=labels,
            landing_uri=landing_uri,
            fmt="csv" if fmt == "csv" else "parquet",
            purpose="scoring" if purpose == "scoring" else "training",
        )
    except CtcdError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(code=1) from error
    typer.echo(json.dumps(produced.__dict__))


@app.command()
def suite(
    dataset: Annotated[str, typer.Argument(help="Data set name.")] = "churn",
    check: Annotated[bool, typer.Option(
        help="Only check that the checked-in suite equals what the spec derives.")] = False,
) -> None:
    """Write include/expectations/<dataset>.json, derived from the data set's spec."""
    from ctcd.validation.suite import derive_suite, render, suite_path, write_suite

    try:
        spec = load_spec(dataset)
    except CtcdError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(code=1) from error
    path = suite_path(dataset)
    if check:
        current = path.read_text() if path.is_file() else ""
        if current != render(derive_suite(spec)):
            typer.echo(f"{path} differs from what {dataset}'s spec derives: run "
                       f"`ctcd data suite {dataset}` and commit it.", err=True)
            raise typer.Exit(code=1)
        typer.echo(f"{path} is up to date")
        return
    written = write_suite(spec)
    typer.echo(f"wrote {written} ({len(derive_suite(spec)['expectations'])} expectations)")
