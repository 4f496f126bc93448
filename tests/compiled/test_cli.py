"""``ctcd models compile`` against a real tracking server: a version verified on the rows
given (exit 0, the manifest as JSON, the tags set), and a version with no converter (exit
3, the reason printed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.compiled.conftest import Trained
from tests.flavored_models import FlavoredFactory
from typer.testing import CliRunner

from ctcd.cli import build

pytestmark = pytest.mark.e2e


def test_compile_verifies_on_the_rows_given_and_prints_the_manifest(
        trained: dict[str, Trained], mlflow_server: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    model = trained["diabetes"]
    mlflow.set_tracking_uri(mlflow_server)
    version = str(mlflow.register_model(model.uri, "compiled-cli-diabetes").version)
    rows = tmp_path / "rows.parquet"
    model.holdout.to_parquet(rows)

    result = CliRunner().invoke(build(), [
        "models", "compile", "compiled-cli-diabetes", version, "--rows", str(rows),
        "--tracking-uri", mlflow_server, "--json"])

    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output)
    assert manifest["verified"] is True
    assert manifest["rows"] >= len(model.holdout)
    assert manifest["runtime"].startswith("onnxruntime ")
    tags = MlflowClient(mlflow_server).get_model_version("compiled-cli-diabetes", version).tags
    # used only where it was measured faster (1 row and all rows): LightGBM may not be
    assert manifest["faster"] == all(v > 1 for v in manifest["speedup"].values())
    assert tags["ctcd.compiled"] == ("verified" if manifest["faster"] else "slower")


def test_compile_says_why_a_model_is_not_compiled(
        flavored_model: FlavoredFactory, mlflow_server: str, tmp_path: Path) -> None:
    model = flavored_model("xgboost-binary")
    result = CliRunner().invoke(build(), [
        "models", "compile", model.name, model.version, "--tracking-uri", mlflow_server])
    assert result.exit_code == 3, result.output
    assert "failed" in result.output and "categorical" in result.output

    missing = CliRunner().invoke(build(), [
        "models", "compile", model.name, model.version, "--rows", str(tmp_path / "nope.csv"),
        "--tracking-uri", mlflow_server])
    assert missing.exit_code != 0
    assert "nope.csv" in missing.output
