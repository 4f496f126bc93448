"""The benchmarks' plots: drawn from the JSON a run ends with (every cell and server of a full
serving run, or the subset the documentation records), written beside it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from bench import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _full_serving_run() -> dict[str, float]:
    flat: dict[str, float] = {}
    for c in (1, 8, 32):
        for rows in (1, 100):
            for suffix in ("", "_v2", "_grpc"):
                key = f"c{c}_rows{rows}{suffix}"
                for server, rate in (("ctcd", 3000.0), ("ctcd_w2", 2500.0), ("mlserver", 1500.0)):
                    flat[f"random_forest.{server}.{key}.rows_s"] = rate * c
                flat[f"random_forest.ratio_mlserver.{key}.rows_s"] = 2.0
                flat[f"random_forest.ratio_mlserver.{key}.p99"] = 0.5
    flat["random_forest.mlflow.c8_rows1.rows_s"] = 100.0
    flat["random_forest.ratio.c8_rows1.rows_s"] = 30.0
    return flat


def test_a_full_serving_run_has_a_throughput_panel_with_every_server() -> None:
    figure = plots.serving_figure(_full_serving_run())
    ratio, p99, throughput = figure.axes
    assert len(ratio.get_lines()) == 6 + 1 + 1  # 6 cells vs MLServer, 1 vs mlflow, y=1
    assert len(p99.get_lines()) == 6 + 1
    labels = [line.get_label() for line in throughput.get_lines()]
    assert any(label.startswith("ours, 2 workers:") for label in labels)
    assert any(label.startswith("mlflow serve:") for label in labels)


def test_a_run_without_the_forest_says_so_and_draws_without_a_warning() -> None:
    churn = {k.replace("random_forest.", "churn.", 1): v for k, v in _full_serving_run().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns of a legend with nothing in it
        figure = plots.serving_figure(churn)
    throughput = figure.axes[2]
    assert throughput.get_title() == "random forest: not in this run"
    assert throughput.get_legend() is None
    assert figure.axes[0].get_legend() is not None


def test_save_writes_the_figures_and_the_plot_side_by_side(tmp_path: Path) -> None:
    path = plots.save("serving", _full_serving_run(), tmp_path)
    assert json.loads(path.read_text())["random_forest.ratio.c8_rows1.rows_s"] == 30.0
    assert path.with_suffix(".png").read_bytes().startswith(PNG)


def test_the_recorded_figures_draw(tmp_path: Path) -> None:
    for name in plots.FIGURES:
        figures = json.loads((plots.RECORDED / f"{name}.json").read_text())
        plots.plot(name, figures, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG)
        assert (plots.RECORDED / f"{name}.png").read_bytes().startswith(PNG)  # committed
    batch = plots.batch_figure(json.loads((plots.RECORDED / "batch.json").read_text()))
    speed, memory, stream = batch.axes
    assert [round(p.get_height()) for p in speed.patches] == [389806, 438438, 134450]
    assert [t.get_text() for t in memory.get_xticklabels()] == ["1,000,000 rows",
                                                                 "10,000,000 rows"]
    assert "lost 0 of 20,000" in stream.get_title()
