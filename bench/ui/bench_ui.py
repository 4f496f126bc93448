"""How long the deployments page takes with 20 deployments, one of them a dead server.

Starts a real MLflow tracking server and Airflow's own API server with the project's plugin
(a fresh SQLite metadata DB, the simple auth manager), registers one trained churn pipeline
under 20 model names, and deploys each with the local deployer into the API server's
CTCD_HOME: 20 real model server processes. One of them is then SIGKILLed: the registry
still says it should run, so its row must say it is dead without the page waiting for it.

Then, with the UI's session cookie (a JWT from ``POST /auth/token``):

- the list page (``GET /ctcd/deployments``) over loopback, ``--requests`` times one after
  another: the wall time a browser waits for the HTML (median, max), and the page's own
  figure for observing the servers and MLflow (its "observed now in X s");
- the same page in a real browser (Debian's chromium driven by Playwright): time to the
  ``load`` event, and inside the Airflow UI (``/plugin/deployments``) time until the
  frame's rows are drawn.

Each figure is compared with the target of one second (``*_vs_target``: below 1 meets it).
Ends with one JSON line of all figures.
Usage: python bench/ui/bench_ui.py [--servers 20] [--requests 20] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins"))

from ctcd import reaper  # noqa: E402

TARGET_S = 1.0
PORTS = (9850, 9899)
BROWSER_LOADS = 5


def register_models(tracking_uri: str, names: list[str]) -> None:
    """One small churn pipeline, registered under every name (version 1 of each)."""
    import mlflow

    from ctcd.data.churn import FEATURES, LABEL, generate_snapshot
    from ctcd.training.model import build_pipeline, log_model

    frame = generate_snapshot(date(2026, 1, 1), rows=4_000)
    features = frame[list(FEATURES)]
    pipeline = build_pipeline("logistic_regression", {"max_iter": 300})
    pipeline.fit(features, frame[LABEL])
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench-ui")
    with mlflow.start_run() as run:
        info = log_model(pipeline, features.head(5), registered_model_name=names[0])
    for name in names[1:]:
        mlflow.register_model(info.model_uri, name)
    print(f"registered run {run.info.run_id} as {len(names)} models", flush=True)


@contextmanager
def servers(work: Path) -> Iterator[tuple[str, str, Path]]:
    """An MLflow tracking server and Airflow's API server with the plugin; yields their
    URLs and the CTCD_HOME the plugin reads."""
    import subprocess

    from ctcd.stack.config import airflow_env
    from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http

    mlflow_port, api_port = free_port(), free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    home = work / "ctcd"
    env = {**os.environ, **airflow_env(work / "airflow", api_port=api_port),
           "CTCD_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_url}
    started = []
    try:
        started.append(spawn(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination",
             str(work / "artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1"], log_path=work / "mlflow.log", env=env))
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                       capture_output=True, env=env)
        started.append(spawn([sys.executable, "-m", "airflow", "api-server", "--port",
                              str(api_port)], log_path=work / "api-server.log", env=env))
        wait_http(f"{mlflow_url}/health", timeout=180, process=started[0],
                  log_path=work / "mlflow.log")
        wait_http(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", timeout=180,
                  process=started[1], log_path=work / "api-server.log")
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_url
        yield mlflow_url, f"http://127.0.0.1:{api_port}", home
    finally:
        for proc in reversed(started):
            stop_process_tree(proc.pid, timeout=20)


def deploy(home: Path, tracking_uri: str, names: list[str]) -> tuple[Any, str]:
    """Every name on its own model server; the last one then SIGKILLed (dead). Returns the
    deployer and the dead server's id."""
    from ctcd.deployers import DeploymentConfig
    from ctcd.deployers.local import LocalDeployer
    from ctcd.settings import Settings

    deployer = LocalDeployer(Settings(home=home, server_port_range=PORTS,
                                      mlflow_tracking_uri=tracking_uri))
    started = time.monotonic()
    for name in names:
        deployer.deploy_model(DeploymentConfig(
            model_name=name, model_uri=f"models:/{name}/1", model_version="1",
            dag_id="churn_training", run_id="manual__bench", task_id="deploy"), "replace",
            timeout=300)
    print(f"{len(names)} model servers started in {time.monotonic() - started:.0f}s",
          flush=True)
    [dead] = deployer.find_model_server(model_name=names[-1])
    pid = deployer.record(dead.service_id).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    print(f"SIGKILLed {dead.server_name} (pid {pid}); its record still says running",
          flush=True)
    return deployer, dead.service_id


def measure_http(api: str, token: str, requests: int, dead: str, count: int
                 ) -> dict[str, Any]:
    import httpx

    walls, own = [], []
    with httpx.Client(base_url=api, cookies={"_token": token}, timeout=30) as client:
        first = None
        for _ in range(requests + 1):
            started = time.perf_counter()
            response = client.get("/ctcd/deployments")
            wall = time.perf_counter() - started
            response.raise_for_status()
            page = response.text
            rows = page.count('<tr class="deployment"')
            if rows != count:
                raise SystemExit(f"the page lists {rows} deployments, not {count}")
            start = page.index(f'data-id="{dead}"')
            status = re.search(r'data-status="([^"]+)"', page[start - 200:start + 200])
            if status is None or status.group(1) in ("running", "no answer"):
                raise SystemExit(f"the dead server's row says {status}, not that it is down")
            took = re.search(r"observed now \(.*?\) in ([0-9.]+) s", page)
            if first is None:  # the app is built and its caches filled on the first one
                first = wall
                continue
            walls.append(wall)
            if took:
                own.append(float(took.group(1)))
    assert first is not None and status is not None
    return {"dead_row_status": status.group(1), "first_s": round(first, 3),
            "median_s": round(statistics.median(walls), 3),
            "max_s": round(max(walls), 3), "min_s": round(min(walls), 3),
            "observe_median_s": round(statistics.median(own), 3) if own else None,
            "requests": requests}


def measure_browser(api: str, token: str, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    binary = shutil.which("chromium")
    if binary is None:
        raise SystemExit("chromium is not installed: scripts/system-packages.sh ensure bench-ui")
    direct, framed = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_cookies([{"name": "_token", "value": token, "url": api}])
            page = context.new_page()
            page.goto(f"{api}/plugin/deployments")  # warm: the UI's own assets cached
            page.frame_locator("iframe").locator("tr.deployment").first.wait_for()
            for _ in range(loads):
                started = time.perf_counter()
                page.goto(f"{api}/ctcd/deployments", wait_until="load")
                direct.append(time.perf_counter() - started)
                started = time.perf_counter()
                page.goto(f"{api}/plugin/deployments")
                page.frame_locator("iframe").locator("tr.deployment").last.wait_for()
                framed.append(time.perf_counter() - started)
        finally:
            browser.close()
    return {"page_load_median_s": round(statistics.median(direct), 3),
            "page_load_max_s": round(max(direct), 3),
            "in_ui_rows_drawn_median_s": round(statistics.median(framed), 3),
            "in_ui_rows_drawn_max_s": round(max(framed), 3), "loads": loads,
            "chromium": browser.version}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER

    names = [f"churn-ui-bench-{i:02d}" for i in range(args.servers)]
    with tempfile.TemporaryDirectory(prefix="ctcd-bench-ui-") as tmp:
        work = Path(tmp)
        reaper.remove_on_exit(work)
        with servers(work) as (mlflow_url, api, home):
            register_models(mlflow_url, names)
            deployer, dead = deploy(home, mlflow_url, names)
            try:
                token = httpx.post(f"{api}/auth/token", timeout=10, json={
                    "username": ADMIN_USER, "password": ADMIN_PASSWORD}).json()["access_token"]
                figures: dict[str, Any] = {"deployments": args.servers, "dead": 1,
                                           "target_s": TARGET_S}
                figures["http"] = measure_http(api, token, args.requests, dead, args.servers)
                http = figures["http"]
                print(f"list page, {args.servers} deployments (1 dead), {args.requests} "
                      f"requests: median {http['median_s']:.3f}s, max {http['max_s']:.3f}s "
                      f"(first {http['first_s']:.3f}s; the page's own observation median "
                      f"{http['observe_median_s']}s)", flush=True)
                figures["median_vs_target"] = round(http["median_s"] / TARGET_S, 3)
                figures["max_vs_target"] = round(http["max_s"] / TARGET_S, 3)
                if not args.no_browser:
                    figures["browser"] = measure_browser(api, token, BROWSER_LOADS)
                    b = figures["browser"]
                    print(f"chromium {b['chromium']}: page load median "
                          f"{b['page_load_median_s']:.3f}s (max {b['page_load_max_s']:.3f}s); "
                          f"inside the Airflow UI, rows drawn median "
                          f"{b['in_ui_rows_drawn_median_s']:.3f}s (max "
                          f"{b['in_ui_rows_drawn_max_s']:.3f}s)", flush=True)
                    figures["browser_load_vs_target"] = round(
                        b["page_load_median_s"] / TARGET_S, 3)
                figures["targets_missed"] = int(http["max_s"] >= TARGET_S)
            finally:
                for handle in deployer.find_model_server():
                    deployer.delete_model_server(handle.service_id, timeout=30, force=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_ui.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)
    if args.servers < 2:
        parser.error("--servers needs at least 2 (one of them is killed)")
    reaper.exit_on_sigterm()
    guard = reaper.start()
    try:
        figures = run(args)
    finally:
        guard.close()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
