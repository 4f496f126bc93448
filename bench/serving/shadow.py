"""The shadow cell of ``make bench-serving``: what mirroring costs the live path.

One ctcd server (one process, ``--threads 1``) serves a RandomForest (100 trees, depth 12,
20 features) as version 1 and has the same model loaded as version 2, with no traffic.
``wrk`` drives 1-row MLflow requests at concurrency 8 for BENCH_SECONDS per cell: no
shadow, version 2 shadowed at 10%, at 100%, and that round twice, interleaved, in the same
run (other load on a shared machine then weighs on every kind of cell alike); a kind's
figures are the mean of its two rounds. Per cell: live req/s, p50, p99, failed responses,
and the shadow's counters (mirrored, dropped, answered, agreement). Target: at 10%
mirroring, live req/s >= 0.9x and p99 <= 1.2x of no shadow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import load

from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http

TARGETS = {"req_s_10": 0.9, "p99_10": 1.2}
CELLS = (("none", None), ("mirror_10", 10), ("mirror_100", 100))
ROUNDS = 2
CONCURRENCY = 8


def _model(work: Path) -> tuple[Path, Path]:
    """A RandomForest saved as an MLflow model directory, and a 1-row request body."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=5000, n_features=20, n_informative=8,
                               random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(20)])
    forest = RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0)
    forest.fit(frame, y)
    path = work / "shadow-model"
    mlflow.sklearn.save_model(  # as training saves it: skops, its tree type trusted
        forest, str(path), serialization_format="skops",
        skops_trusted_types=["sklearn.tree._tree.Tree"],
        signature=infer_signature(frame.head(5), forest.predict(frame.head(5))))
    body = work / "shadow-body.json"
    body.write_text(json.dumps({"dataframe_split": json.loads(
        frame.head(1).to_json(orient="split", index=False))}))
    return path, body


def measure(work: Path, seconds: float) -> dict[str, Any]:
    model, body = _model(work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / "shadow.log"
    proc = spawn([sys.executable, "-m", "ctcd.serving", "--model-uri", str(model),
                  "--model-name", "bench-shadow", "--model-version", "1", "--host",
                  "127.0.0.1", "--port", str(port)], log_path=log)
    try:
        wait_http(f"{base}/ping", timeout=300, process=proc, log_path=log)
        with httpx.Client(base_url=base, timeout=120) as admin:
            admin.post("/admin/versions", json={"model_uri": str(model), "version": "2"}
                       ).raise_for_status()
            load.wrk(f"{base}/invocations", body, CONCURRENCY, 1)  # warm the route
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in CELLS}
            for _ in range(ROUNDS):
                for name, percent in CELLS:
                    runs[name].append(_cell(admin, base, body, percent, seconds))
        cells = {name: _mean(figures) for name, figures in runs.items()}
    finally:
        stop_process_tree(proc.pid)
    none = cells["none"]
    ratios = {f"{metric}_{percent}": cells[f"mirror_{percent}"][key] / none[key]
              for percent in (10, 100)
              for metric, key in (("req_s", "req_s"), ("p50", "p50_ms"), ("p99", "p99_ms"))}
    misses = []
    if ratios["req_s_10"] < TARGETS["req_s_10"]:
        misses.append(f"shadow 10% live req/s x{ratios['req_s_10']:.2f} < 0.9")
    if ratios["p99_10"] > TARGETS["p99_10"]:
        misses.append(f"shadow 10% live p99 x{ratios['p99_10']:.2f} > 1.2")
    return {"cells": cells, "none": none, "ratios": ratios, "misses": misses}


def _cell(admin: httpx.Client, base: str, body: Path, percent: float | None,
          seconds: float) -> dict[str, Any]:
    if percent is not None:
        admin.put("/admin/shadow", json={"version": "2", "mirror_percent": percent}
                  ).raise_for_status()
    figures = load.wrk(f"{base}/invocations", body, CONCURRENCY, seconds)
    if percent is not None:
        ended = admin.delete("/admin/shadow").json()["shadow"]["cumulative"]
        figures["shadow"] = {k: ended[k] for k in ("mirrored", "dropped", "answered", "errors",
                                                   "timeouts")}
        figures["shadow"]["agreement"] = ended["labels"]["agreement"]
    return figures


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one kind of cell: rates and latencies averaged, counters added."""
    out: dict[str, Any] = {k: sum(r[k] for r in runs) / len(runs)
                           for k in ("req_s", "p50_ms", "p99_ms")}
    out["failed"] = sum(r["failed"] for r in runs)
    if "shadow" in runs[0]:
        out["shadow"] = {k: sum(r["shadow"][k] for r in runs)
                         for k in ("mirrored", "dropped", "answered", "errors", "timeouts")}
        agreements = [r["shadow"]["agreement"] for r in runs
                      if r["shadow"]["agreement"] is not None]
        out["shadow"]["agreement"] = min(agreements) if agreements else None
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"\nshadow (random forest, 1 row, MLflow route, c={CONCURRENCY}; live figures):")
    print(f"  {'cell':<11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}  shadow")
    for name, cell in result["cells"].items():
        shadow = cell.get("shadow")
        said = ("-" if shadow is None else
                f"mirrored {shadow['mirrored']} dropped {shadow['dropped']} answered "
                f"{shadow['answered']} errors {shadow['errors'] + shadow['timeouts']} "
                f"agreement {shadow['agreement']}")
        print(f"  {name:<11} {cell['req_s']:>8.0f} {cell['p50_ms']:>8.2f} "
              f"{cell['p99_ms']:>8.2f} {cell['failed']:>7}  {said}")
    r = result["ratios"]
    print(f"  vs no shadow: 10% req/s x{r['req_s_10']:.2f} p99 x{r['p99_10']:.2f}; "
          f"100% req/s x{r['req_s_100']:.2f} p99 x{r['p99_100']:.2f}")
    for miss in result["misses"]:
        print(f"  target missed: {miss}")


def flat(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f"shadow_{k}": round(v, 3) for k, v in result["ratios"].items()}
    for name, cell in result["cells"].items():
        for key in ("req_s", "p50_ms", "p99_ms", "failed"):
            out[f"shadow_{name}_{key}"] = round(cell[key], 3)
        if "shadow" in cell:
            out[f"shadow_{name}_dropped"] = cell["shadow"]["dropped"]
            out[f"shadow_{name}_answered"] = cell["shadow"]["answered"]
    out["shadow_misses"] = result["misses"]
    return out
