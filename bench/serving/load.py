"""One benchmark cell: drive a server with wrk and read what it cost the server.

Besides wrk's throughput and latency, a cell records the CPU time the server's processes
(children included) spent, and the rows per predict call the server formed (from its
``ctcd_model_batch_rows`` histogram) so the in-process limit can be measured on batches of
that size.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

LUA = Path(__file__).with_name("post.lua")
GRPC_CLIENT = Path(__file__).with_name("grpc_load.py")
Driver = Callable[[str, Path, int, float], dict[str, Any]]  # (target, body, c, seconds)
_SAMPLE = re.compile(r"^ctcd_model_batch_rows_(sum|count)\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its living descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def batch_rows(metrics_url: str | None) -> tuple[float, float] | None:
    """(sum, count) of the server's rows-per-predict histogram, over all versions."""
    if metrics_url is None:
        return None
    text = httpx.get(metrics_url, timeout=10).text
    totals = {"sum": 0.0, "count": 0.0}
    for part, value in _SAMPLE.findall(text):
        totals[part] += float(value)
    return totals["sum"], totals["count"]


def wrk(url: str, body: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    threads = min(2, concurrency)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
         "--timeout", "10s", "-s", str(LUA), url],
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


def grpc(target: str, request: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    """The gRPC counterpart of :func:`wrk` (``grpc_load.py`` in its own process)."""
    out = subprocess.run([sys.executable, str(GRPC_CLIENT), target, str(request),
                          str(concurrency), str(max(1, round(seconds)))],
                         capture_output=True, text=True, check=True)
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    return {"req_s": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "requests": raw["requests"], "failed": raw["failed"]}


def cell(pid: int, url: str, body: Path, rows: int, concurrency: int, seconds: float,
         metrics_url: str | None, driver: Driver = wrk) -> dict[str, Any]:
    """One load run at one concurrency, with the server's CPU per request and mean batch
    rows."""
    before_batches = batch_rows(metrics_url)
    before_cpu = cpu_seconds(pid)
    started = time.perf_counter()
    figures = driver(url, body, concurrency, seconds)
    figures["cpu_ms_per_req"] = (cpu_seconds(pid) - before_cpu) * 1000 / max(
        1, figures["requests"])
    figures["wall_s"] = time.perf_counter() - started
    figures["rows_s"] = figures["req_s"] * rows
    after_batches = batch_rows(metrics_url)
    if before_batches is not None and after_batches is not None:
        predicts = after_batches[1] - before_batches[1]
        if predicts > 0:
            figures["batch_rows"] = (after_batches[0] - before_batches[0]) / predicts
    return figures
