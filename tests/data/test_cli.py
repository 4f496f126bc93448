"""``ctcd data produce`` and ``ctcd data suite``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from ctcd.cli import build

runner = CliRunner()


def test_produce_lands_a_partition_and_labels_apart(ctcd_home: Path) -> None:
    result = runner.invoke(
        build(), ["data", "produce", "--date", "2026-11-20", "--rows", "1500", "--no-labels"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    landed = ctcd_home / "landing" / "churn" / "date=2026-11-20" / "part-0.parquet"
    assert out["partition"] == f"file://{landed}" and out["rows"] == 1_500
    assert "churned" not in pd.read_parquet(landed).columns
    labels = pd.read_parquet(
        ctcd_home / "landing" / "churn_labels" / "date=2026-11-20" / "part-0.parquet"
    )
    assert list(labels.columns) == ["customer_id", "churned"] and len(labels) == 1_500
    assert [p.name for p in landed.parent.iterdir()] == ["part-0.parquet"]  # no partial file


def test_produce_for_scoring_lands_unlabelled_rows_where_batch_inference_reads(
    ctcd_home: Path,
) -> None:
    from ctcd.batch.params import BatchInferenceParams
    from ctcd.data.sources import LandingSource
    from ctcd.data.spec import load_spec
    from ctcd.pipelines.batch_inference import _source

    result = runner.invoke(build(), ["data", "produce", "--for", "scoring", "--date",
                                     "2026-11-21", "--rows", "800", "--format", "csv"])
    assert result.exit_code == 0, result.output
    landed = ctcd_home / "scoring" / "churn" / "date=2026-11-21" / "part-0.csv"
    assert json.loads(result.stdout.strip().splitlines()[-1])["labels"] is None
    frame = pd.read_csv(landed)
    assert len(frame) == 800 and "churned" not in frame.columns
    assert not (ctcd_home / "landing").exists() or not any((ctcd_home / "landing").iterdir())
    source = _source(BatchInferenceParams(), load_spec("churn"))  # the DAG's default source
    assert isinstance(source, LandingSource)
    assert [d.isoformat() for d in source.partitions()] == ["2026-11-21"]

    bad = runner.invoke(build(), ["data", "produce", "--for", "serving"])
    assert bad.exit_code == 2 and "--for" in bad.output


def test_produce_refuses_an_unknown_corruption(ctcd_home: Path) -> None:
    result = runner.invoke(build(), ["data", "produce", "--corruption", "gremlins"])
    assert result.exit_code == 2 and "--corruption" in result.output


def test_suite_check_passes_on_the_checked_in_suite_and_names_a_stale_one(
    tmp_path: Path, monkeypatch
) -> None:
    assert runner.invoke(build(), ["data", "suite", "churn", "--check"]).exit_code == 0
    specs = tmp_path / "datasets"
    specs.mkdir()
    (specs / "churn.yaml").write_text(
        (Path(__file__).resolve().parents[2] / "include" / "datasets" / "churn.yaml")
        .read_text()
        .replace("max: 110", "max: 99")
    )
    monkeypatch.setenv("CTCD_DATASETS_DIR", str(specs))
    result = runner.invoke(build(), ["data", "suite", "churn", "--check"])
    assert result.exit_code == 1 and "differs from what churn's spec derives" in result.output
    written = runner.invoke(build(), ["data", "suite", "churn"])
    assert written.exit_code == 0 and "59 expectations" in written.output
    suite = json.loads((tmp_path / "expectations" / "churn.json").read_text())
    [age] = [
        e["kwargs"]
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "age"
    ]
    assert age["max_value"] == 99
