"""Benchmark: the ctcd model server against MLServer 1.7.1 and `mlflow models serve`.

One run on this machine, the same models and payloads for every server:

- ``random_forest``: a RandomForest (100 trees, depth 12) on 20 numeric features;
- ``churn``: the project's own churn pipeline (``ctcd.training.model.build_pipeline``,
  scaling + one-hot encoding of categorical columns, then its default estimator);
- ``xgboost``: an XGBClassifier (100 trees, depth 6) on the same 20 features, logged with
  ``mlflow.xgboost`` (MLServer: its XGBoost runtime, on the same ``.ubj`` file);
- ``lightgbm``: an LGBMRegressor (100 trees, 31 leaves) on them, logged with
  ``mlflow.lightgbm`` (MLServer: its LightGBM runtime, on the model's Booster file; a
  regressor, so both answer the same floats where a classifier's Booster would answer
  probabilities and the scikit-learn API labels).

Each server runs as one process (ours also with ``--workers 2``), is started from a local
model directory (cold start = process start to ready), and is driven by ``wrk`` for
BENCH_SECONDS per cell at concurrency 1, 8 and 32 with 1-row and 100-row requests over both
protocols (MLflow ``dataframe_split`` on ``/invocations``, V2 tensors on
``/v2/models/<name>/infer``). Per cell: rows/s, p50, p99, the server processes' CPU time
per request, and for ours the rows per predict call it formed (``ctcd_model_batch_rows``)
and the share of the in-process limit reached. The limit of a cell is measured right after
it, back to back, in a process of its own (``limit.py``, one native thread like the
servers): rows/s of the model's ``predict``, loaded as the server loads it, called directly
on the input the server builds, in the mix of batch sizes the server formed in that cell
(from its histogram's buckets, scaled to its exact mean); both are printed. ``mlflow
models serve`` runs only the cells whose ratio is printed (random forest, MLflow route, 1
row, c=8 and c=32). Then our server hot-swaps and canaries a version under load, and
mirrors a share of its traffic to a shadow version (``shadow.py``: live req/s and p99 at 10%
and 100% mirroring against no shadow). Ends with one JSON line.

Compiled models: each model is compiled as a registered version is (``ctcd models compile``:
converted to ONNX and verified against the original on 2,000 of its rows), and a third
server of ours, ``ctcd_compiled`` (one process), answers with the graph in ONNX Runtime; the
other two are started with ``--no-compiled`` and answer with the model's own library, so
every cell compares compiled, uncompiled and MLServer in the same run. A graph not faster
than the original at 1 row and at all the verification rows is not used (``ctcd.compiled:
slower``): that model gets no compiled server. Cold start compiled against uncompiled is
also measured with our server alone, alternately, three times each (``cold_start_alone``):
among the cells' servers the compiled one starts right after the two-worker one.

The bare HTTP limit (``bare.py``): for the random forest, a raw ASGI app on one uvicorn
worker (our server's uvicorn settings) answering the bytes our compiled server answered,
driven by the same wrk and 1-row requests at c=8 and c=32 on both HTTP routes; the compiled
cells' requests/s are printed as a share of it. Beside it on the same event loop, as our
server runs its gRPC transport, a grpc.aio server answers every ``ModelInfer`` with the
message our compiled server answered to the 1-row request: grpcio's own limit, driven by
the same gRPC client at c=8 and c=32, printed against the compiled cells and MLServer's
(a gRPC target above it is out of any grpcio server's reach here). The compiled targets
(random forest >= 10x MLServer at 1 row and >= 3x at 100 rows at c=8/c=32, p99 <=
MLServer's at every cell, >= 60% of the bare HTTP limit; churn >= 5x at 1 row) count in
``targets_missed`` with the others.

Modules: ``grid.py`` (the cells), ``models.py`` (fit, register, compile, request bodies),
``measure.py`` (one model's servers and cells), ``load.py`` (one cell under wrk or
``grpc_load.py``), ``limit.py`` (the in-process limit), ``bare.py``, ``peers.py`` (starting
each server), ``swap.py`` and ``shadow.py`` (the hot-swap and shadow cells), ``report.py``
(tables, targets, the JSON line).

Run: ``make bench-serving`` (needs ``wrk``: apt-get install wrk); ``--quick`` for
development (2 s cells); ``BENCH_ARGS="--kinds random_forest,churn"`` measures only those
models (and skips the hot swap and the shadow); ``--only shadow`` runs the shadow cell alone
(``make bench-serving BENCH_ARGS="--only shadow"``). MLServer is installed on first use into
``.state/bench/mlserver-<version>`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import peers
import report
import shadow
import swap
from grid import KINDS
from measure import measure_model

import models as bench_models
import plots
from ctcd import reaper
from ctcd.stack.processes import stop_process_tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s cells, for development")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="models to measure, comma-separated (default: all, and the swap)")
    parser.add_argument("--only", choices=("shadow",), help="run this cell alone")
    args = parser.parse_args()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    seconds = float(os.environ.get("BENCH_SECONDS", "2" if args.quick else "6"))
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    # Stopped by SIGTERM: the finally blocks stop the servers and remove the directory. Killed
    # (SIGKILL): the reaper does both (every server is registered with it by spawn).
    reaper.exit_on_sigterm()
    guard = reaper.start()
    try:
        return _run(args, kinds, seconds)
    finally:
        guard.close()


def _run(args: argparse.Namespace, kinds: tuple[str, ...], seconds: float) -> int:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ctcd-bench-serving-"))
    if not os.environ.get("BENCH_KEEP"):
        reaper.remove_on_exit(work)
    env = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "GIT_PYTHON_REFRESH": "quiet",
           "CTCD_HOME": str(work / "ctcd-home"),
           # one native thread per server for every server: on a 2-core machine a second
           # OpenMP thread of the churn model's HistGradientBoosting makes each predict
           # wait on a busy core (a 1-row predict took 0.4-1.6 s instead of 15 ms here).
           # Ours predicts with one by default (--threads 1); the others get it from here.
           **{f"{lib}_NUM_THREADS": "1" for lib in ("OMP", "OPENBLAS", "MKL")},
           # `mlflow models serve` runs `uvicorn` from PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.environ.update(env)
    if args.only == "shadow":
        return _shadow_only(work, seconds)
    mlserver_bin = peers.install_mlserver()
    results: dict[str, Any] = {"seconds": seconds, "cpus": os.cpu_count(), "models": {}}
    try:
        # the tracking server is needed only to log and register (its job consumers poll)
        tracking = bench_models.start_tracking(work)
        try:
            os.environ["MLFLOW_TRACKING_URI"] = tracking.url
            with contextlib.redirect_stdout(sys.stderr):  # mlflow prints run links
                models = bench_models.register_models(tracking.url, work)
        finally:
            stop_process_tree(tracking.proc.pid)
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        for kind in kinds:
            results["models"][kind] = measure_model(kind, models[kind], mlserver_bin, work,
                                                     seconds)
        if kinds == KINDS:
            results["swap"] = swap.swap_under_load(models["swap"], work, seconds)
            results["shadow"] = shadow.measure(work, seconds)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = time.perf_counter() - started
    report.print_table(results)
    flat = report.flat_figures(results)
    saved = plots.save("serving", flat)
    print(f"figures: {saved}, plot: {saved.with_suffix('.png')}", flush=True)
    print(json.dumps(flat, sort_keys=True), flush=True)
    return 0



def _shadow_only(work: Path, seconds: float) -> int:
    """The shadow cell alone (its own JSON line, bench ``serving-shadow``)."""
    started = time.perf_counter()
    try:
        result = shadow.measure(work, seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shadow.print_table(result)
    print(json.dumps({"bench": "serving-shadow", "seconds": seconds, "cpus": os.cpu_count(),
                      "total_s": round(time.perf_counter() - started, 1),
                      **shadow.flat(result)}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
