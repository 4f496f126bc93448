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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import joblib

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import load
import peers
import shadow

import plots
from ctcd import reaper
from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http

KINDS = ("random_forest", "churn", "xgboost", "lightgbm")
NUMERIC_KINDS = ("random_forest", "xgboost", "lightgbm")  # one [n, 20] FP64 tensor on V2
PROTOCOLS = ("mlflow", "v2")  # HTTP routes, answers compared across servers
# gRPC ModelInfer cells for the numeric models (one FP64 tensor; the churn model's BYTES
# columns would need MLServer's pandas content type as gRPC parameters)
KIND_PROTOCOLS = {**{kind: (*PROTOCOLS, "grpc") for kind in NUMERIC_KINDS},
                  "churn": PROTOCOLS}
CONCURRENCY = (1, 8, 32)
ROWS = (1, 100)
SERVERS = ("ctcd", "ctcd_w2", "mlserver")
MLFLOW_CELLS = (("mlflow", 8, 1), ("mlflow", 32, 1))  # random forest only
FEATURES = [f"f{i}" for i in range(20)]
MODEL_NAME = {kind: f"bench-{kind}" for kind in KINDS}


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
        tracking = _start_tracking(work)
        try:
            os.environ["MLFLOW_TRACKING_URI"] = tracking.url
            with contextlib.redirect_stdout(sys.stderr):  # mlflow prints run links
                models = _register_models(tracking.url, work)
        finally:
            stop_process_tree(tracking.proc.pid)
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        for kind in kinds:
            results["models"][kind] = _measure_model(kind, models[kind], mlserver_bin, work,
                                                     seconds)
        if kinds == KINDS:
            results["swap"] = _swap_under_load(models["swap"], work, seconds)
            results["shadow"] = shadow.measure(work, seconds)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = time.perf_counter() - started
    _print_table(results)
    flat = _flat(results)
    saved = plots.save("serving", flat)
    print(f"figures: {saved}, plot: {saved.with_suffix('.png')}", flush=True)
    print(json.dumps(flat, sort_keys=True), flush=True)
    return 0


# -- setup ------------------------------------------------------------------------------
class _Tracking:
    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc, self.url = proc, url


def _start_tracking(work: Path) -> _Tracking:
    port = free_port()
    log = work / "mlflow-server.log"
    proc = spawn([sys.executable, "-m", "mlflow", "server",
                  "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
                  "--artifacts-destination", str(work / "artifacts"),
                  "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], log_path=log)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=180, process=proc, log_path=log)
    return _Tracking(proc, url)


def _register_models(tracking_uri: str, work: Path) -> dict[str, Any]:
    """Fit, log and register the models; download each to a local directory (the one every
    server starts from) and save the file MLServer's runtime for its library loads (a
    joblib copy of a scikit-learn estimator, XGBoost's own file, the LightGBM Booster's)."""
    from datetime import date

    import lightgbm as lgb
    import mlflow
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from ctcd.data.churn import FEATURES as CHURN_FEATURES
    from ctcd.data.churn import LABEL, generate_snapshot
    from ctcd.models import load_model
    from ctcd.training.model import DEFAULT_HYPERPARAMETERS, build_pipeline, log_model

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench-serving")
    x, y = make_classification(n_samples=5000, n_features=20, n_informative=8,
                               random_state=0)
    numeric = pd.DataFrame(x, columns=FEATURES)
    target = x[:, :8] @ np.linspace(1.0, 2.0, 8) + np.random.default_rng(0).normal(size=len(x))
    churn = generate_snapshot(date(2026, 1, 1), rows=5_000)
    churn_x = churn[list(CHURN_FEATURES)]
    kind_default = str(load_model("churn").trainer.estimator)
    fitted = {
        "random_forest": (RandomForestClassifier(n_estimators=100, max_depth=12,
                                                 random_state=0).fit(numeric, y), numeric),
        "churn": (build_pipeline(kind_default, DEFAULT_HYPERPARAMETERS[kind_default])
                  .fit(churn_x, churn[LABEL]), churn_x),
        "xgboost": (xgb.XGBClassifier(n_estimators=100, max_depth=6, random_state=0)
                    .fit(numeric, y), numeric),
        "lightgbm": (lgb.LGBMRegressor(n_estimators=100, num_leaves=31, random_state=0,
                                       verbose=-1).fit(numeric, target), numeric),
    }
    labels = {"random_forest": "RandomForest", "churn": kind_default,
              "xgboost": "XGBClassifier", "lightgbm": "LGBMRegressor"}
    models: dict[str, Any] = {}
    for kind, (estimator, frame) in fitted.items():
        runtime = kind if kind in ("xgboost", "lightgbm") else "sklearn"
        with mlflow.start_run(run_name=f"bench-{kind}"):
            info = _log(kind, estimator, frame, log_model)
        compiled = _compile(kind, str(info.registered_model_version), frame, tracking_uri)
        root = work / "models" / kind
        (root / runtime).mkdir(parents=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL_NAME[kind]}/{info.registered_model_version}",
            dst_path=str(root / "mlflow"))
        if runtime == "xgboost":
            estimator.save_model(str(root / runtime / "model.ubj"))
        elif runtime == "lightgbm":
            estimator.booster_.save_model(str(root / runtime / "model.bst"))
        else:
            joblib.dump(estimator, root / runtime / "model.joblib")
        models[kind] = {"dir": Path(local), "runtime": runtime, "runtime_dir": root / runtime,
                        "version": str(info.registered_model_version),
                        "estimator": estimator,
                        "sample": frame.sample(200, random_state=1).reset_index(drop=True),
                        "label": labels[kind], "bodies": {}, "compiled": compiled}
        for protocol in KIND_PROTOCOLS[kind]:
            for rows in ROWS:
                models[kind]["bodies"][protocol, rows] = _body(
                    work, kind, protocol, models[kind]["sample"].head(rows))
    # two LogisticRegression versions for the hot-swap part, as local directories
    swap = {}
    for name, estimator in (("1", LogisticRegression(max_iter=500)),
                            ("2", LogisticRegression(C=0.01, max_iter=500))):
        with mlflow.start_run(run_name=f"bench-lr-{name}"):
            info = log_model(estimator.fit(numeric, y), numeric.head(5),
                             registered_model_name="bench-logistic_regression")
        swap[name] = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/bench-logistic_regression/{info.registered_model_version}",
            dst_path=str(work / "models" / f"swap-{name}"))
    models["swap"] = {**swap, "body": _body(work, "swap", "mlflow", numeric.head(1))}
    return models


def _compile(kind: str, version: str, frame: Any, tracking_uri: str) -> dict[str, Any]:
    """Compile the registered version as ``ctcd models compile`` does (the graph is logged
    beside the model, so the downloaded directory has it), verified on 2,000 of its rows."""
    from ctcd.compiled.version import compile_version
    from ctcd.tracking import Tracking

    outcome = compile_version(MODEL_NAME[kind], version, tracking=Tracking(tracking_uri),
                              rows=frame.sample(2000, random_state=2))
    m, tags = outcome.manifest, outcome.tags()
    print(f"  {kind:13s} compiled: {tags['ctcd.compiled']}: {tags['ctcd.compiled.reason']}; "
          f"speedup {dict(m.speedup)}", file=sys.stderr, flush=True)
    # a verified graph is used only where it was measured faster (1 row and all rows)
    return {"verified": m.verified, "used": m.verified and m.faster,
            "reason": tags["ctcd.compiled.reason"], "max_abs_diff": m.max_abs_diff,
            "rows": m.rows, "speedup": dict(m.speedup)}


def _log(kind: str, estimator: Any, frame: Any, log_sklearn: Any) -> Any:
    """Log with the model's own MLflow flavor (as training does), registered."""
    import mlflow
    from mlflow.models import infer_signature

    if kind not in ("xgboost", "lightgbm"):
        return log_sklearn(estimator, frame.head(5), registered_model_name=MODEL_NAME[kind])
    signature = infer_signature(frame.head(5), estimator.predict(frame.head(5)))
    options = {"serialization_format": "pickle"} if kind == "lightgbm" else {}
    return getattr(mlflow, kind).log_model(
        estimator, name="model", signature=signature, input_example=frame.head(5),
        registered_model_name=MODEL_NAME[kind], **options)


def _body(work: Path, kind: str, protocol: str, part: Any) -> Path:
    path = work / f"body-{kind}-{protocol}-{len(part)}.json"
    if protocol == "grpc":  # a serialized inference.ModelInferRequest
        from ctcd.serving.grpc import protos

        pb2 = protos()[0]
        request = pb2.ModelInferRequest(model_name=MODEL_NAME[kind], inputs=[
            pb2.ModelInferRequest.InferInputTensor(
                name="input-0", datatype="FP64", shape=list(part.shape),
                contents=pb2.InferTensorContents(fp64_contents=part.to_numpy().ravel()))])
        path.write_bytes(request.SerializeToString())
        return path
    if protocol == "mlflow":
        doc: dict[str, Any] = {"dataframe_split": json.loads(
            part.to_json(orient="split", index=False))}
    elif kind in NUMERIC_KINDS:  # one [n, 20] tensor (numpy content type)
        doc = {"inputs": [{"name": "input-0", "shape": list(part.shape), "datatype": "FP64",
                           "data": part.to_numpy().ravel().tolist()}]}
    else:  # one tensor per column (MLServer's pandas content type)
        inputs = []
        for column in part.columns:
            values = part[column]
            if values.dtype.kind in "iu":
                entry: dict[str, Any] = {"datatype": "INT64", "data": [int(v) for v in values]}
            elif values.dtype.kind == "f":
                entry = {"datatype": "FP64", "data": [float(v) for v in values]}
            else:
                entry = {"datatype": "BYTES", "data": [str(v) for v in values],
                         "parameters": {"content_type": "str"}}
            inputs.append({"name": column, "shape": [len(part)], **entry})
        doc = {"inputs": inputs, "parameters": {"content_type": "pd"}}
    path.write_text(json.dumps(doc))
    return path


# -- measuring --------------------------------------------------------------------------
def _route(protocol: str, started: peers.Started, name: str) -> str:
    port = started.port
    if protocol == "grpc":
        return f"127.0.0.1:{started.grpc_port}"
    if protocol == "mlflow":
        return f"http://127.0.0.1:{port}/invocations"
    return f"http://127.0.0.1:{port}/v2/models/{name}/infer"


def _predictions(protocol: str, url: str, body: Path) -> list[Any]:
    answer = httpx.post(url, content=body.read_bytes(),
                        headers={"Content-Type": "application/json"}, timeout=60)
    answer.raise_for_status()
    doc = answer.json()
    if protocol == "mlflow":
        return list(doc["predictions"])
    return list(doc["outputs"][0]["data"])


def _key(protocol: str, concurrency: int, rows: int) -> str:
    # the MLflow route keeps the key names of earlier runs of this benchmark
    return f"c{concurrency}_rows{rows}" + ("" if protocol == "mlflow" else f"_{protocol}")


def _all_cells(protocols: tuple[str, ...]) -> list[tuple[str, int, int]]:
    return [(p, c, r) for p in protocols for r in ROWS for c in CONCURRENCY]


def _start_all(kind: str, model: dict[str, Any], mlserver_bin: Path,
               work: Path) -> dict[str, tuple[peers.Started, tuple[str, ...]]]:
    """Every server of this model, started one after the other (each cold start alone),
    with the routes it is measured on. MLServer: the V2 and gRPC routes on its runtime for
    the model's library, the MLflow route on its MLflow runtime (the only one with
    ``/invocations``)."""
    name = MODEL_NAME[kind]
    servers: dict[str, tuple[peers.Started, tuple[str, ...]]] = {}
    runtime = model["runtime"]
    try:
        for server, workers in (("ctcd", 1), ("ctcd_w2", 2)):
            servers[server] = (peers.start_ours(model["dir"], name, model["version"], workers,
                                                work, ("--no-compiled",)), KIND_PROTOCOLS[kind])
        if model["compiled"]["used"]:
            servers["ctcd_compiled"] = (peers.start_ours(model["dir"], name, model["version"], 1,
                                                         work), KIND_PROTOCOLS[kind])
        servers[f"mlserver_{runtime}"] = (peers.start_mlserver(
            mlserver_bin, runtime, model["runtime_dir"], name, work), ("v2", "grpc"))
        servers["mlserver_mlflow"] = (peers.start_mlserver(
            mlserver_bin, "mlflow", model["dir"], name, work), ("mlflow",))
        if kind == "random_forest":
            servers["mlflow"] = (peers.start_mlflow(model["dir"], work), ("mlflow",))
    except BaseException:
        for started, _ in servers.values():
            stop_process_tree(started.proc.pid)
        raise
    return servers


def _measure_model(kind: str, model: dict[str, Any], mlserver_bin: Path, work: Path,
                   seconds: float) -> dict[str, Any]:
    """All servers run at once, idle but for the one under load: each cell is measured on
    every server back to back, so a ratio compares figures taken seconds apart (other
    load on a shared machine drifts over minutes)."""
    name = MODEL_NAME[kind]
    cold = peers.cold_starts(model["dir"], name, model["version"], work) \
        if model["compiled"]["used"] else None
    servers = _start_all(kind, model, mlserver_bin, work)
    try:
        limit = _Limit(kind, model, work, seconds)
    except BaseException:
        for started, _ in servers.values():
            stop_process_tree(started.proc.pid)
        raise
    figures: dict[str, dict[str, Any]] = {
        server: {"cold_start_s": started.cold_start_s,
                 "cold_start_s_cpu": started.cold_start_s_cpu}
        for server, (started, _) in servers.items()}
    try:
        for protocol in KIND_PROTOCOLS[kind]:
            driver = load.grpc if protocol == "grpc" else load.wrk
            for rows in ROWS:
                body = model["bodies"][protocol, rows]
                serving = [(server, started) for server, (started, routes) in servers.items()
                           if protocol in routes]
                for server, started in serving:
                    url = _route(protocol, started, name)
                    if protocol in PROTOCOLS:
                        figures[server].setdefault(f"answers_{protocol}", _predictions(
                            protocol, url, model["bodies"][protocol, 100]))
                    driver(url, body, 8, 1)  # warm connections, caches, the batcher
                for concurrency in CONCURRENCY:
                    serving_now = [(s, st) for s, st in serving if s != "mlflow"
                                   or (protocol, concurrency, rows) in MLFLOW_CELLS]
                    for server, started in serving_now:
                        cell = load.cell(started.proc.pid, _route(protocol, started, name),
                                         body, rows, concurrency, seconds, started.metrics_url,
                                         driver)
                        cell["runtime"] = started.runtime
                        if server in ("ctcd", "ctcd_w2"):  # right after the cell
                            _add_limit(cell, rows, limit, 2 if server == "ctcd_w2" else 1)
                        figures[server][_key(protocol, concurrency, rows)] = cell
                        print(f"  {kind:13s} {server:16s} {protocol:6s} c={concurrency:<3d} "
                              f"rows={rows:<4d} {cell['rows_s']:9.0f} rows/s  p50 "
                              f"{cell['p50_ms']:7.2f} ms  p99 {cell['p99_ms']:7.2f} ms  cpu "
                              f"{cell['cpu_ms_per_req']:.2f} ms/req  batch "
                              f"{cell.get('batch_rows', 0):.1f} {_mix(cell)} limit "
                              f"{cell.get('limit_rows_s', 0):.0f} rows/s ("
                              f"{cell.get('limit_share', 0):.0%}, CPU "
                              f"{cell.get('limit_cpu_share', 0):.0%})  failed "
                              f"{cell['failed']}", file=sys.stderr, flush=True)
    finally:
        limit.close()
        for started, _ in servers.values():
            stop_process_tree(started.proc.pid)
    # MLServer's two runtimes are one column; its cold start is the faster of the two
    runtime = model["runtime"]
    own_rt, mlflow_rt = figures.pop(f"mlserver_{runtime}"), figures.pop("mlserver_mlflow")
    mlserver = {**mlflow_rt, **own_rt,
                "cold_start_s": min(own_rt["cold_start_s"], mlflow_rt["cold_start_s"]),
                f"cold_start_s_{runtime}": own_rt["cold_start_s"],
                "cold_start_s_mlflow": mlflow_rt["cold_start_s"],
                "cold_start_s_cpu": min(own_rt["cold_start_s_cpu"],
                                        mlflow_rt["cold_start_s_cpu"])}
    by_server: dict[str, Any] = {**figures, "mlserver": mlserver}
    by_server["same_predictions"] = _same_answers(by_server)
    by_server["model"] = model["label"]
    by_server["compiled"] = model["compiled"]
    by_server["runtime"] = runtime
    by_server["protocols"] = KIND_PROTOCOLS[kind]
    if cold is not None:
        by_server["cold_alone"] = cold
    return by_server


def _mix(cell: dict[str, Any]) -> str:
    """The batch sizes a cell formed, as ``[rows x calls, ...]``."""
    sizes = cell.get("batch_sizes") or []
    return "[" + ", ".join(f"{rows:.0f}x{calls:.0f}" for rows, calls in sizes) + "]"


def _close(a: list[Any], b: list[Any]) -> bool:
    """Equal answers: labels identical, numbers within the compiled models' tolerance."""
    import numpy as np

    if a == b:
        return True
    x, y = np.asarray(a), np.asarray(b)
    return bool(x.shape == y.shape and x.dtype.kind in "fiu" and y.dtype.kind in "fiu"
                and np.allclose(x, y, rtol=1e-5, atol=1e-5))


def _same_answers(by_server: dict[str, Any]) -> bool:
    ours = {p: by_server["ctcd"].pop(f"answers_{p}") for p in PROTOCOLS}
    same = True
    for server, figures in by_server.items():
        for protocol in PROTOCOLS:
            theirs = figures.pop(f"answers_{protocol}", None)
            if theirs is not None and not _close(theirs, ours[protocol]):
                print(f"WARNING: {server} answers differently on the {protocol} route",
                      file=sys.stderr)
                same = False
    return same


class _Limit:
    """The model's in-process limit, measured on request in its own process (``limit.py``):
    the model the servers load, the input the server builds, one native thread."""

    def __init__(self, kind: str, model: dict[str, Any], work: Path, seconds: float) -> None:
        # predict time per measurement (split over the batch sizes): a third of a cell
        self.seconds = max(1.0, seconds / 3)
        sample = work / f"sample-{kind}.pkl"
        model["sample"].to_pickle(sample)
        self.log = work / f"limit-{kind}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("limit.py")), str(model["dir"]),
                 str(sample)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, start_new_session=True)
        reaper.watch(self.proc.pid)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"limit process did not start; see {self.log}:\n"
                               f"{self.log.read_text()[-2000:]}")

    def rows_s(self, sizes: list[list[float]]) -> tuple[float, float]:
        """Rows per second and per CPU second of predict, called back to back on this mix
        of ``[[rows, calls], ...]``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"sizes": sizes, "seconds": self.seconds}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"limit process died; see {self.log}:\n"
                               f"{self.log.read_text()[-2000:]}")
        doc = json.loads(answer)
        return float(doc["rows_s"]), float(doc["rows_cpu_s"])

    def close(self) -> None:
        stop_process_tree(self.proc.pid)


def _add_limit(cell: dict[str, Any], rows: int, limit: _Limit, cores: int) -> None:
    """The limit for this cell (measured now, right after it) and the share reached; with
    ``cores`` worker processes the limit is that many predicts at once. Also the CPU share:
    predict's CPU per row over the server's CPU per row in the cell, a steadier figure on a
    shared machine (neither side counts time spent waiting for a core)."""
    sizes = cell.get("batch_sizes")
    if not sizes:
        return
    rows_s, rows_cpu_s = limit.rows_s(sizes)
    cell["limit_rows_s"] = rows_s * cores
    cell["limit_share"] = cell["rows_s"] / cell["limit_rows_s"]
    server_rows_cpu_s = rows * 1000 / cell["cpu_ms_per_req"]
    cell["limit_cpu_share"] = server_rows_cpu_s / rows_cpu_s


def _swap_under_load(models: dict[str, Any], work: Path, seconds: float) -> dict[str, Any]:
    """Blue/green, canary and rollback on our server while wrk runs at c=32."""
    port = free_port()
    (v1, uri_v1), (v2, uri_v2) = (("1", models["1"]), ("2", models["2"]))
    log = work / "swap.log"
    proc = spawn([sys.executable, "-m", "ctcd.serving", "--model-uri", uri_v1, "--model-name",
                  "bench-logistic_regression", "--model-version", v1, "--host", "127.0.0.1",
                  "--port", str(port)], log_path=log)
    steps: list[str] = []
    seconds = max(seconds, 10)

    def admin() -> None:
        base = f"http://127.0.0.1:{port}/admin"
        plan: list[tuple[str, str, Any]] = [
            ("POST", "/versions", {"model_uri": uri_v2, "version": v2}),
            ("PUT", "/traffic", {"weights": {v1: 0.9, v2: 0.1}}),      # canary
            ("PUT", "/traffic", {"weights": {v1: 0.5, v2: 0.5}}),
            ("PUT", "/traffic", {"weights": {v2: 1.0}}),               # promote
            ("DELETE", f"/versions/{v1}", None),
            ("POST", "/versions", {"model_uri": uri_v1, "version": v1}),
            ("PUT", "/traffic", {"weights": {v1: 1.0}}),               # roll back
        ]
        with httpx.Client(timeout=120) as client:
            time.sleep(seconds * 0.15)
            for method, path, payload in plan:
                response = client.request(method, base + path, json=payload)
                steps.append(f"{method} {path} {response.status_code}")
                time.sleep(seconds * 0.1)

    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=300, process=proc, log_path=log)
        thread = threading.Thread(target=admin)
        thread.start()
        figures = load.wrk(f"http://127.0.0.1:{port}/invocations", models["body"], 32, seconds)
        thread.join()
        versions = httpx.get(f"http://127.0.0.1:{port}/admin/versions").json()["versions"]
    finally:
        stop_process_tree(proc.pid)
    return {"failed": figures["failed"], "requests": figures["requests"],
            "req_s": figures["req_s"], "steps": steps,
            "served": {v["version"]: v["requests"] for v in versions}}


# -- reporting --------------------------------------------------------------------------
TARGETS = {"rows_s": 1.5, "p99": 1.0, "p50_c1": 0.9, "cpu": 0.6, "cold_start": 1 / 3,
           "limit_share": 0.6}


def _ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    return {"rows_s": ours["rows_s"] / theirs["rows_s"],
            "p50": ours["p50_ms"] / theirs["p50_ms"],
            "p99": ours["p99_ms"] / theirs["p99_ms"],
            "cpu": ours["cpu_ms_per_req"] / theirs["cpu_ms_per_req"]}


def _misses(key: str, concurrency: int, ratio: dict[str, float], share: float | None) -> list[str]:
    missed = []
    if concurrency > 1:
        if ratio["rows_s"] < TARGETS["rows_s"]:
            missed.append(f"{key} rows/s x{ratio['rows_s']:.2f} < 1.5")
        if ratio["p99"] > TARGETS["p99"]:
            missed.append(f"{key} p99 x{ratio['p99']:.2f} > 1")
        # at c=1 a request's CPU is the model's own predict for both servers
        if ratio["cpu"] > TARGETS["cpu"]:
            missed.append(f"{key} cpu/req x{ratio['cpu']:.2f} > 0.6")
    elif ratio["p50"] > TARGETS["p50_c1"]:
        missed.append(f"{key} p50 x{ratio['p50']:.2f} > 0.9")
    if share is not None and share < TARGETS["limit_share"]:
        missed.append(f"{key} limit share {share:.0%} < 60%")
    return missed


def _print_table(results: dict[str, Any]) -> None:
    print(f"\nctcd model server vs MLServer {peers.MLSERVER_VERSION} (parallel_workers 0, "
          f"adaptive batching {peers.MAX_BATCH_SIZE} / {peers.MAX_BATCH_TIME * 1000:g} ms) "
          f"and `mlflow models serve` ({results['cpus']} CPUs, {results['seconds']:g} s per "
          f"cell, wrk; one process each unless w2)")
    header = (f"{'model':13s} {'route':6s} {'c':>2s} {'rows':>4s} | {'ours rows/s':>11s} "
              f"{'w2 rows/s':>9s} {'MLSrv rows/s':>12s} {'x':>5s} | {'p50 ours/MLSrv ms':>17s} "
              f"| {'p99 ours/MLSrv ms':>17s} | {'cpu ms/req o/M':>14s} {'x':>5s} | "
              f"{'batch':>6s} {'limit rows/s':>12s} {'share':>5s} {'cpu':>4s} | "
              f"MLServer runtime")
    print(header)
    print("-" * len(header))
    missed: list[str] = []
    for kind, by_server in results["models"].items():
        ours, w2, theirs = by_server["ctcd"], by_server["ctcd_w2"], by_server["mlserver"]
        for protocol, concurrency, rows in _all_cells(by_server["protocols"]):
            key = _key(protocol, concurrency, rows)
            o, t, w = ours[key], theirs[key], w2[key]
            r = _ratios(o, t)
            share = o.get("limit_share")
            missed += _misses(f"{kind} {protocol} c={concurrency} rows={rows}", concurrency, r,
                              share)
            print(f"{kind:13s} {protocol:6s} {concurrency:2d} {rows:4d} | {o['rows_s']:11.0f} "
                  f"{w['rows_s']:9.0f} {t['rows_s']:12.0f} {r['rows_s']:5.2f} | "
                  f"{o['p50_ms']:7.2f} / {t['p50_ms']:7.2f} | {o['p99_ms']:7.2f} / "
                  f"{t['p99_ms']:7.2f} | {o['cpu_ms_per_req']:6.2f} /{t['cpu_ms_per_req']:6.2f} "
                  f"{r['cpu']:5.2f} | {o.get('batch_rows', 0):6.1f} "
                  f"{o.get('limit_rows_s', 0):12.0f} {(share or 0) * 100:4.0f}% "
                  f"{o.get('limit_cpu_share', 0) * 100:3.0f}% | "
                  f"{t['runtime']}")
        cold = ours["cold_start_s"] / theirs["cold_start_s"]
        if cold > TARGETS["cold_start"]:
            missed.append(f"{kind} cold start x{cold:.2f} > 0.33")
        print(f"{kind:13s} ({by_server['model']}) cold start: ours {ours['cold_start_s']:.2f} s, "
              f"w2 {w2['cold_start_s']:.2f} s, MLServer {theirs['cold_start_s']:.2f} s "
              f"({by_server['runtime']} runtime "
              f"{theirs['cold_start_s_' + by_server['runtime']]:.2f} s, mlflow runtime "
              f"{theirs['cold_start_s_mlflow']:.2f} s; ours x{cold:.2f}); CPU to ready: ours "
              f"{ours['cold_start_s_cpu']:.2f} s, w2 {w2['cold_start_s_cpu']:.2f} s, MLServer "
              f"{theirs['cold_start_s_cpu']:.2f} s (ours "
              f"x{ours['cold_start_s_cpu'] / theirs['cold_start_s_cpu']:.2f}); same predictions: "
              f"{by_server['same_predictions']}")
        if "mlflow" in by_server:
            m = by_server["mlflow"]
            for protocol, concurrency, rows in MLFLOW_CELLS:
                key = _key(protocol, concurrency, rows)
                print(f"{kind:13s} vs `mlflow models serve` c={concurrency} rows={rows}: "
                      f"{ours[key]['req_s']:.0f} vs {m[key]['req_s']:.0f} req/s "
                      f"(x{ours[key]['req_s'] / m[key]['req_s']:.1f}), "
                      f"p99 {ours[key]['p99_ms']:.1f} vs {m[key]['p99_ms']:.1f} ms; "
                      f"cold start {ours['cold_start_s']:.2f} vs "
                      f"{m['cold_start_s']:.2f} s")
    _print_compiled(results)
    swap = results.get("swap")
    if swap is None:
        print(f"targets (ours, one process, against MLServer): "
              f"{'all met' if not missed else f'{len(missed)} missed: ' + '; '.join(missed)}")
        print(f"benchmark took {results['total_s']:.0f} s")
        return
    print(f"hot swap + canary + rollback under load (c=32, {swap['requests']} requests): "
          f"{swap['failed']} non-2xx/failed; steps: {', '.join(swap['steps'])}")
    print(f"targets (ours, one process, against MLServer): "
          f"{'all met' if not missed else f'{len(missed)} missed: ' + '; '.join(missed)}")
    shadow.print_table(results["shadow"])
    print(f"benchmark took {results['total_s']:.0f} s")


def _print_compiled(results: dict[str, Any]) -> None:
    """Compiled (ONNX Runtime) against the same model uncompiled and against MLServer."""
    print("\ncompiled models (ONNX Runtime, one process) against the same server uncompiled and "
          "MLServer, same run")
    header = (f"{'model':13s} {'route':6s} {'c':>2s} {'rows':>4s} | {'compiled rows/s':>15s} "
              f"{'x uncompiled':>12s} {'x MLSrv':>7s} | {'p99 compiled/MLSrv ms':>21s}")
    print(header)
    print("-" * len(header))
    for kind, by_server in results["models"].items():
        compiled = by_server.get("ctcd_compiled")
        if compiled is None:
            print(f"{kind:13s} answers uncompiled: {by_server['compiled']['reason']}")
            continue
        for protocol, concurrency, rows in _all_cells(by_server["protocols"]):
            key = _key(protocol, concurrency, rows)
            c, o, t = compiled[key], by_server["ctcd"][key], by_server["mlserver"][key]
            print(f"{kind:13s} {protocol:6s} {concurrency:2d} {rows:4d} | {c['rows_s']:15.0f} "
                  f"{c['rows_s'] / o['rows_s']:12.2f} {c['rows_s'] / t['rows_s']:7.2f} | "
                  f"{c['p99_ms']:9.2f} / {t['p99_ms']:9.2f}")
        info, alone = by_server["compiled"], by_server["cold_alone"]
        c, u = alone["ctcd_compiled"], alone["ctcd"]
        print(f"{kind:13s} compiled cold start {compiled['cold_start_s']:.2f} s (uncompiled "
              f"{by_server['ctcd']['cold_start_s']:.2f} s); started alone, alternated, median "
              f"of {peers.COLD_ROUNDS}: {c['wall_s']:.2f} vs {u['wall_s']:.2f} s "
              f"(x{c['wall_s'] / u['wall_s']:.2f}), CPU {c['cpu_s']:.2f} vs {u['cpu_s']:.2f} s "
              f"(x{c['cpu_s'] / u['cpu_s']:.2f}); verified on {info['rows']} rows, "
              f"largest difference {info['max_abs_diff']:.3g}")


def _flat(results: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {"bench": "serving", "seconds": results["seconds"],
                            "workers": 1, "cpus": results["cpus"],
                            "total_s": round(results["total_s"], 1)}
    names = ("req_s", "rows_s", "p50_ms", "p99_ms", "failed", "cpu_ms_per_req", "batch_rows",
             "limit_rows_s", "limit_share", "limit_cpu_share")
    missed = 0
    for kind, by_server in results["models"].items():
        flat[f"{kind}.same_predictions"] = by_server["same_predictions"]
        flat[f"{kind}.compiled.verified"] = by_server["compiled"]["verified"]
        flat[f"{kind}.compiled.used"] = by_server["compiled"]["used"]
        for size, speedup in by_server["compiled"]["speedup"].items():
            flat[f"{kind}.compiled.speedup.{'1_row' if size == '1 row' else 'all_rows'}"] = speedup
        flat[f"{kind}.compiled.max_abs_diff"] = by_server["compiled"]["max_abs_diff"]
        for server in ("ctcd", "ctcd_w2", "ctcd_compiled", "mlserver", "mlflow"):
            figures = by_server.get(server)
            if figures is None:
                continue
            for key, value in figures.items():
                if isinstance(value, dict):
                    for name in names:
                        if name in value:
                            flat[f"{kind}.{server}.{key}.{name}"] = round(value[name], 4)
                    if server == "mlserver":
                        flat[f"{kind}.mlserver.{key}.runtime"] = value["runtime"]
                elif key.startswith("cold_start_s"):
                    flat[f"{kind}.{server}.{key}"] = round(value, 3)
        ours, theirs = by_server["ctcd"], by_server["mlserver"]
        cold = ours["cold_start_s"] / theirs["cold_start_s"]
        flat[f"{kind}.ratio_mlserver.cold_start"] = round(cold, 4)
        missed += cold > TARGETS["cold_start"]
        for protocol, concurrency, rows in _all_cells(by_server["protocols"]):
            key = _key(protocol, concurrency, rows)
            r = _ratios(ours[key], theirs[key])
            for name, value in r.items():
                flat[f"{kind}.ratio_mlserver.{key}.{name}"] = round(value, 4)
            flat[f"{kind}.ratio_mlserver.{key}.rows_s_w2"] = round(
                by_server["ctcd_w2"][key]["rows_s"] / theirs[key]["rows_s"], 4)
            missed += len(_misses(key, concurrency, r, ours[key].get("limit_share")))
        compiled = by_server.get("ctcd_compiled")
        for server, figures in by_server.get("cold_alone", {}).items():
            flat[f"{kind}.{server}.cold_start_alone_s"] = round(figures["wall_s"], 3)
            flat[f"{kind}.{server}.cold_start_alone_s_cpu"] = round(figures["cpu_s"], 3)
        if "cold_alone" in by_server:
            alone = by_server["cold_alone"]
            flat[f"{kind}.ratio_compiled_uncompiled.cold_start_alone"] = round(
                alone["ctcd_compiled"]["wall_s"] / alone["ctcd"]["wall_s"], 4)
            flat[f"{kind}.ratio_compiled_uncompiled.cold_start_alone_cpu"] = round(
                alone["ctcd_compiled"]["cpu_s"] / alone["ctcd"]["cpu_s"], 4)
        for protocol, concurrency, rows in _all_cells(by_server["protocols"]) if compiled else ():
            key = _key(protocol, concurrency, rows)
            flat[f"{kind}.ratio_compiled_mlserver.{key}.rows_s"] = round(
                compiled[key]["rows_s"] / theirs[key]["rows_s"], 4)
            flat[f"{kind}.ratio_compiled_mlserver.{key}.p99"] = round(
                compiled[key]["p99_ms"] / theirs[key]["p99_ms"], 4)
            flat[f"{kind}.ratio_compiled_uncompiled.{key}.rows_s"] = round(
                compiled[key]["rows_s"] / ours[key]["rows_s"], 4)
        if "mlflow" in by_server:
            m = by_server["mlflow"]
            flat[f"{kind}.ratio.cold_start"] = round(ours["cold_start_s"] / m["cold_start_s"], 4)
            for protocol, concurrency, rows in MLFLOW_CELLS:
                key = _key(protocol, concurrency, rows)
                flat[f"{kind}.ratio.{key}.req_s"] = round(ours[key]["req_s"] / m[key]["req_s"], 3)
                flat[f"{kind}.ratio.{key}.rows_s"] = round(ours[key]["rows_s"] / m[key]["rows_s"],
                                                           3)
                flat[f"{kind}.ratio.{key}.p99"] = round(ours[key]["p99_ms"] / m[key]["p99_ms"], 4)
    flat["targets_missed"] = missed
    swap = results.get("swap")
    if swap is None:
        return flat
    flat.update({"swap.failed": swap["failed"], "swap.requests": swap["requests"],
                 "swap.req_s": round(swap["req_s"], 1), "swap.steps": swap["steps"]})
    flat.update(shadow.flat(results["shadow"]))
    return flat


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
