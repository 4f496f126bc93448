"""``ctcd models compile NAME VERSION``: compile a registered version on demand."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ctcd.console import fail, out
from ctcd.errors import CtcdError, InvalidParams


def compile_command(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to compile.")],
    rows: Annotated[Path | None, typer.Option(
        help="Parquet or CSV file of rows to verify on (the model's input columns); "
        "default: the holdout rows its training run kept.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Convert a version's model to ONNX, verify it against the original (labels identical,
    values within 1e-5 + 1e-5*|value|) and log the graph and the outcome beside it. A model
    that does not convert or verify keeps being served as it is; the reason is printed and
    set as the tag ctcd.compiled.reason."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from ctcd.compiled.version import TAG, compile_version
    from ctcd.settings import get_settings
    from ctcd.tracking import Tracking

    try:
        frame = None
        if rows is not None:
            if not rows.is_file():
                raise InvalidParams(f"--rows {rows}: no such file")
            frame = pd.read_parquet(rows) if rows.suffix in (".parquet", ".pq") else \
                pd.read_csv(rows)
        uri = tracking_uri or get_settings().tracking_uri()
        os.environ["MLFLOW_TRACKING_URI"] = uri
        outcome = compile_version(model, version, tracking=Tracking(uri), rows=frame)
    except CtcdError as error:
        raise fail(error) from error
    except MlflowException as error:
        raise fail(InvalidParams(f"{model} version {version}: {error.message}")) from error
    if as_json:
        out.print_json(outcome.manifest.to_json().decode())
    else:
        tags = outcome.tags()
        out.print(f"{model} version {version}: {tags[TAG]}")
        for key, value in tags.items():
            if key != TAG:
                out.print(f"  {key}: {value}")
    if not outcome.manifest.verified:
        raise typer.Exit(3)



