"""Benchmark: the ctcd model server against `mlflow models serve --env-manager local`.

One run on this machine: the same two registered models (a RandomForest of 100 trees and
a LogisticRegression, 20 numeric features), served by each server in turn with the same
worker count, each driven by `wrk` for BENCH_SECONDS (15) at concurrency 8 and 32 with
1-row and 100-row requests. Prints req/s, rows/s, p50, p99, cold start (process start to
the first 200 on /ping) and ours/mlflow ratios; then hot-swaps and canaries a version on
our server under load and counts non-2xx responses; ends with one JSON line of all figures.

Run: `make bench-serving` (needs `wrk`: apt-get install wrk).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins"))

from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
CONCURRENCY = (8, 32)
ROWS = (1, 100)
LUA = Path(__file__).with_name("post.lua")
FEATURES = [f"f{i}" for i in range(20)]


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    # stop cleanly (servers and the tracking server too) when interrupted
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="ctcd-bench-serving-"))
    env = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "GIT_PYTHON_REFRESH": "quiet",
           "CTCD_HOME": str(work / "ctcd-home"),
           # `mlflow models serve` runs `uvicorn` from PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.environ.update(env)
    tracking = _start_tracking(work)
    try:
        os.environ["MLFLOW_TRACKING_URI"] = tracking.url
        with contextlib.redirect_stdout(sys.stderr):  # mlflow prints run links
            models, sample = _register_models(tracking.url)
        bodies = {rows: _body(work, sample, rows) for rows in ROWS}
        results: dict[str, Any] = {"seconds": SECONDS, "workers": WORKERS, "cpus": os.cpu_count(),
                                   "models": {}}
        for kind in ("random_forest", "logistic_regression"):
            uri = models[kind]
            results["models"][kind] = {}
            for server in ("mlflow", "ctcd"):
                results["models"][kind][server] = _measure(server, kind, uri, bodies, work)
            _check_same_answers(results["models"][kind])
        results["swap"] = _swap_under_load(models, bodies[1], work)
    finally:
        stop_process_tree(tracking.proc.pid)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    _print_table(results)
    print(json.dumps(_flat(results), sort_keys=True), flush=True)
    return 0


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


def _register_models(tracking_uri: str) -> tuple[dict[str, str], Any]:
    import mlflow
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from ctcd.training.model import log_model

    x, y = make_classification(n_samples=5000, n_features=20, n_informative=8,
                               random_state=0)
    frame = pd.DataFrame(x, columns=FEATURES)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench-serving")
    estimators = {
        "random_forest": RandomForestClassifier(n_estimators=100, random_state=0),
        "logistic_regression": LogisticRegression(max_iter=500),
    }
    uris = {}
    for kind, estimator in estimators.items():
        estimator.fit(frame, y)
        with mlflow.start_run(run_name=f"bench-{kind}"):
            info = log_model(estimator, frame.head(5), registered_model_name=f"bench-{kind}")
        uris[kind] = f"models:/bench-{kind}/{info.registered_model_version}"
    # a second LogisticRegression version for the swap part
    with mlflow.start_run(run_name="bench-lr-v2"):
        info = log_model(LogisticRegression(C=0.01, max_iter=500).fit(frame, y),
                         frame.head(5), registered_model_name="bench-logistic_regression")
    uris["logistic_regression_v2"] = f"models:/bench-logistic_regression/" \
                                     f"{info.registered_model_version}"
    return uris, frame.sample(200, random_state=1)


def _body(work: Path, sample: Any, rows: int) -> Path:
    path = work / f"body-{rows}.json"
    part = sample.head(rows)
    path.write_text(json.dumps({"dataframe_split": {
        "columns": list(part.columns), "data": part.to_numpy().tolist()}}))
    return path


def _start_server(server: str, kind: str, uri: str, port: int,
                  work: Path) -> tuple[subprocess.Popen[bytes], float]:
    if server == "mlflow":
        argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri,
                "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(WORKERS)]
    else:
        name, _, version = uri.removeprefix("models:/").partition("/")
        argv = [sys.executable, "-m", "ctcd.serving", "--model-uri", uri, "--model-name", name,
                "--model-version", version, "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(WORKERS)]
    log = work / f"{server}-{kind}-{port}.log"
    started = time.perf_counter()
    proc = spawn(argv, log_path=log)
    deadline = started + 300
    with httpx.Client(timeout=1.0) as client:
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{server} exited early; see {log}")
            try:
                if client.get(f"http://127.0.0.1:{port}/ping").status_code == 200:
                    return proc, time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"{server} did not answer /ping; see {log}")


def _wrk(port: int, body: Path, concurrency: int, seconds: int) -> dict[str, Any]:
    threads = min(2, concurrency)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(LUA), f"http://127.0.0.1:{port}/invocations"],
        capture_output=True, text=True, env={**os.environ, "BENCH_BODY": str(body)},
        check=True,
    )
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(match.group(1))
    seconds_run = raw["duration_us"] / 1e6
    return {"req_s": raw["requests"] / seconds_run, "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "requests": raw["requests"],
            "failed": raw["non2xx"] + raw["connect"] + raw["read"] + raw["write"]
            + raw["timeout"]}


def _measure(server: str, kind: str, uri: str, bodies: dict[int, Path],
             work: Path) -> dict[str, Any]:
    port = free_port()
    proc, cold = _start_server(server, kind, uri, port, work)
    try:
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations",
                            content=bodies[100].read_bytes(),
                            headers={"Content-Type": "application/json"}, timeout=60)
        answer.raise_for_status()
        out: dict[str, Any] = {"cold_start_s": cold, "predictions": answer.json()["predictions"]}
        for rows, body in bodies.items():
            _wrk(port, body, 8, 2)  # warm the connection pool and caches
            for concurrency in CONCURRENCY:
                figures = _wrk(port, body, concurrency, SECONDS)
                figures["rows_s"] = figures["req_s"] * rows
                out[f"c{concurrency}_rows{rows}"] = figures
                print(f"  {kind:20s} {server:6s} c={concurrency:<3d} rows={rows:<4d} "
                      f"{figures['req_s']:9.1f} req/s  p99 {figures['p99_ms']:8.1f} ms",
                      file=sys.stderr, flush=True)
        return out
    finally:
        stop_process_tree(proc.pid)


def _check_same_answers(by_server: dict[str, Any]) -> None:
    ours = by_server["ctcd"].pop("predictions")
    theirs = by_server["mlflow"].pop("predictions")
    by_server["same_predictions"] = ours == theirs
    if ours != theirs:
        print("WARNING: predictions differ between servers", file=sys.stderr)


def _swap_under_load(models: dict[str, str], body: Path, work: Path) -> dict[str, Any]:
    """Blue/green, canary and rollback on our server while wrk runs at c=32."""
    port = free_port()
    uri_v1, uri_v2 = models["logistic_regression"], models["logistic_regression_v2"]
    proc, _ = _start_server("ctcd", "swap", uri_v1, port, work)
    v1, v2 = uri_v1.rsplit("/", 1)[1], uri_v2.rsplit("/", 1)[1]
    steps: list[str] = []
    seconds = max(SECONDS, 10)

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
        thread = threading.Thread(target=admin)
        thread.start()
        figures = _wrk(port, body, 32, seconds)
        thread.join()
        versions = httpx.get(f"http://127.0.0.1:{port}/admin/versions").json()["versions"]
    finally:
        stop_process_tree(proc.pid)
    return {"failed": figures["failed"], "requests": figures["requests"],
            "req_s": figures["req_s"], "steps": steps,
            "served": {v["version"]: v["requests"] for v in versions}}


def _print_table(results: dict[str, Any]) -> None:
    print(f"\nctcd model server vs `mlflow models serve --env-manager local` "
          f"({results['cpus']} CPUs, workers={results['workers']}, {results['seconds']} s "
          "per cell, wrk)")
    header = (f"{'model':20s} {'conc':>4s} {'rows':>4s} | {'mlflow req/s':>12s} "
              f"{'ours req/s':>10s} {'x':>6s} | {'mlflow rows/s':>13s} {'ours rows/s':>11s} | "
              f"{'mlflow p50':>10s} {'ours p50':>8s} | {'mlflow p99':>10s} {'ours p99':>8s} "
              f"{'p99 x':>6s}")
    print(header)
    print("-" * len(header))
    for kind, by_server in results["models"].items():
        theirs, ours = by_server["mlflow"], by_server["ctcd"]
        for rows in ROWS:
            for c in CONCURRENCY:
                key = f"c{c}_rows{rows}"
                t, o = theirs[key], ours[key]
                print(f"{kind:20s} {c:4d} {rows:4d} | {t['req_s']:12.1f} {o['req_s']:10.1f} "
                      f"{o['req_s'] / t['req_s']:6.2f} | {t['rows_s']:13.0f} {o['rows_s']:11.0f} "
                      f"| {t['p50_ms']:8.1f}ms {o['p50_ms']:6.1f}ms | {t['p99_ms']:8.1f}ms "
                      f"{o['p99_ms']:6.1f}ms {o['p99_ms'] / t['p99_ms']:6.3f}")
        ratio = ours["cold_start_s"] / theirs["cold_start_s"]
        print(f"{kind:20s} cold start: mlflow {theirs['cold_start_s']:.2f} s, ours "
              f"{ours['cold_start_s']:.2f} s (x{ratio:.3f}); "
              f"same predictions: {by_server['same_predictions']}")
    swap = results["swap"]
    print(f"hot swap + canary + rollback under load (c=32, {swap['requests']} requests): "
          f"{swap['failed']} non-2xx/failed; steps: {', '.join(swap['steps'])}")


def _flat(results: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {"bench": "serving", "seconds": results["seconds"],
                            "workers": results["workers"], "cpus": results["cpus"]}
    for kind, by_server in results["models"].items():
        flat[f"{kind}.same_predictions"] = by_server["same_predictions"]
        for server in ("mlflow", "ctcd"):
            figures = by_server[server]
            flat[f"{kind}.{server}.cold_start_s"] = round(figures["cold_start_s"], 3)
            for key, value in figures.items():
                if isinstance(value, dict):
                    for name in ("req_s", "rows_s", "p50_ms", "p99_ms", "failed"):
                        flat[f"{kind}.{server}.{key}.{name}"] = round(value[name], 3)
        theirs, ours = by_server["mlflow"], by_server["ctcd"]
        flat[f"{kind}.ratio.cold_start"] = round(ours["cold_start_s"] / theirs["cold_start_s"], 4)
        for rows in ROWS:
            for c in CONCURRENCY:
                key = f"c{c}_rows{rows}"
                o, t = ours[key], theirs[key]
                flat[f"{kind}.ratio.{key}.req_s"] = round(o["req_s"] / t["req_s"], 3)
                flat[f"{kind}.ratio.{key}.rows_s"] = round(o["rows_s"] / t["rows_s"], 3)
                flat[f"{kind}.ratio.{key}.p99"] = round(o["p99_ms"] / t["p99_ms"], 4)
    swap = results["swap"]
    flat.update({"swap.failed": swap["failed"], "swap.requests": swap["requests"],
                 "swap.req_s": round(swap["req_s"], 1), "swap.steps": swap["steps"]})
    return flat


if __name__ == "__main__":
    sys.exit(main())
