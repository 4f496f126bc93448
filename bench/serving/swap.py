"""The hot-swap cell: blue/green, canary, promotion and rollback on our server under load."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import load

from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http


def swap_under_load(models: dict[str, Any], work: Path, seconds: float) -> dict[str, Any]:
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

