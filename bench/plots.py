"""Plots of the benchmarks' figures, from the JSON line each benchmark ends with.

The benchmarks write ``<name>.json`` and ``<name>.png`` side by side under
``.state/bench/results/`` at the end of a run (``save``). The documentation's plots are drawn
from the figures recorded on its pages (``docs/benchmarks/figures/*.json``, a subset of the
same JSON): ``python bench/plots.py`` redraws them.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / ".state" / "bench" / "results"
RECORDED = ROOT / "docs" / "benchmarks" / "figures"
# a serving cell's key: c8_rows1 (the MLflow route), c8_rows1_v2, c32_rows100_grpc
_CELL = re.compile(r"^(?P<kind>\w+?)\.(?P<what>ratio_mlserver|ratio|ctcd|ctcd_w2|mlserver|mlflow)"
                   r"\.c(?P<c>\d+)_rows(?P<rows>\d+)(?:_(?P<protocol>v2|grpc))?\.(?P<name>\w+)$")


def _cells(flat: dict[str, Any]) -> dict[tuple[str, str, str, int], dict[int, float]]:
    """(figure name, model, route, rows) -> {concurrency: value}."""
    series: dict[tuple[str, str, str, int], dict[int, float]] = {}
    for key, value in flat.items():
        match = _CELL.match(key)
        if not match or not isinstance(value, int | float):
            continue
        route = {"v2": "V2", "grpc": "gRPC"}.get(match["protocol"] or "", "MLflow route")
        name = f"{match['what']}.{match['name']}"
        series.setdefault((name, match["kind"], route, int(match["rows"])), {})[
            int(match["c"])] = float(value)
    return series


def _lines(axis: Any, series: dict[tuple[str, str, str, int], dict[int, float]], name: str,
           label: str) -> bool:
    drawn = False
    for (figure, kind, route, rows), points in sorted(series.items()):
        if figure != name:
            continue
        xs = sorted(points)
        axis.plot(xs, [points[x] for x in xs], marker="o",
                  label=f"{label}{kind.replace('_', ' ')}, {route}, {rows} row{'s' * (rows > 1)}")
        drawn = True
    return drawn


def serving_figure(flat: dict[str, Any]) -> Figure:
    """Ours against MLServer and `mlflow models serve` by concurrency: rows/s ratios, p99
    ratios, and (from a full run) rows/s of every server."""
    series = _cells(flat)
    absolute = any(name.endswith(".rows_s") and not name.startswith("ratio")
                   for name, *_ in series)
    panels = 3 if absolute else 2
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), layout="constrained")
    throughput, latency = axes[0], axes[1]
    _lines(throughput, series, "ratio_mlserver.rows_s", "vs MLServer: ")
    _lines(throughput, series, "ratio.rows_s", "vs mlflow serve: ")
    throughput.set(title="rows/s, ours ÷ theirs (higher is better)", yscale="log",
                   xlabel="concurrent clients")
    _lines(latency, series, "ratio_mlserver.p99", "vs MLServer: ")
    latency.set(title="p99 latency, ours ÷ MLServer's (lower is better)",
                xlabel="concurrent clients", ylim=(0, None))
    if absolute:
        forest = {k: v for k, v in series.items() if k[1] == "random_forest"}
        for server, label in (("ctcd", "ours: "), ("ctcd_w2", "ours, 2 workers: "),
                              ("mlserver", "MLServer: "), ("mlflow", "mlflow serve: ")):
            _lines(axes[2], forest, f"{server}.rows_s", label)
        axes[2].set(title="random forest: rows/s" if forest else
                    "random forest: not in this run", yscale="log",
                    xlabel="concurrent clients")
    for axis in axes:
        axis.axhline(1, color="grey", linewidth=0.8, linestyle="--")
        axis.set_xscale("log", base=2)
        axis.set_xticks([1, 8, 32], labels=["1", "8", "32"])
        if axis.get_legend_handles_labels()[0]:  # a panel with nothing drawn has no legend
            axis.legend(fontsize=7)
    return figure


def batch_figure(figures: dict[str, Any]) -> Figure:
    """Batch rows/s against one predict call and the endpoint, memory by input size, and
    streaming against one HTTP request per row."""
    figure, (speed, memory, stream) = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    ratio = figures.get("ratio", {})
    bars = {"one predict call\n(in memory)": ratio.get("limit_rows_per_s"),
            "batch scoring\n(in-process)": ratio.get("batch_rows_per_s"),
            "through the\nendpoint": figures.get("batch_endpoint", {}).get("rows_per_s")}
    bars = {k: v for k, v in bars.items() if v}
    speed.bar(list(bars), list(bars.values()), color=["grey", "tab:blue", "tab:orange"][:len(bars)])
    speed.set(title=f"rows/s on {ratio.get('rows', 0):,} rows", ylabel="rows/s")
    sizes = sorted(int(k.split("_")[1]) for k in figures if re.fullmatch(r"batch_\d+", k))
    labels = [f"{size:,} rows" for size in sizes]
    peak = [figures[f"batch_{size}"]["peak_rss_mb"] for size in sizes]
    growth = [figures[f"batch_{size}"]["peak_growth_mb"] for size in sizes]
    memory.bar(labels, peak, label="peak RSS", color="lightgrey")
    memory.bar(labels, growth, label="of which scoring added", color="tab:blue")
    memory.set(title="memory by input size (flat: bounded chunks)", ylabel="MB")
    memory.legend(fontsize=8)
    streaming = figures.get("streaming", {})
    rates = {"HTTP, one client,\none row a request": streaming.get("http_one_client_rows_per_s"),
             "Redis Stream,\none scorer": streaming.get("scorer_msgs_per_s")}
    rates = {k: v for k, v in rates.items() if v}
    stream.bar(list(rates), list(rates.values()), color=["grey", "tab:blue"][:len(rates)])
    lost = (f"; a killed scorer lost {streaming['kill_lost']} of {streaming['kill_messages']:,}"
            if "kill_lost" in streaming else "")
    stream.set(title=f"messages/s{lost}", yscale="log", ylabel="messages (rows) per second")
    return figure


FIGURES = {"serving": serving_figure, "batch": batch_figure}


def save(name: str, figures: dict[str, Any], folder: Path = RESULTS) -> Path:
    """Write a run's figures and their plot side by side; returns the JSON's path."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    path = stem.with_suffix(".json")
    path.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    plot(name, figures, stem.with_suffix(".png"))
    return path


def plot(name: str, figures: dict[str, Any], path: Path) -> None:
    figure = FIGURES[name](figures)
    figure.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(figure)


def main(argv: list[str]) -> int:
    """Redraw the documentation's plots from the recorded figures."""
    for name in FIGURES:
        source = RECORDED / f"{name}.json"
        figures = json.loads(source.read_text())
        plot(name, figures, source.with_suffix(".png"))
        print(f"{source.with_suffix('.png').relative_to(ROOT)} from {source.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
