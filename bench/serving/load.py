"""One benchmark cell: drive a server with wrk and read what it cost the server.

Besides wrk's throughput and latency, a cell records the CPU time the server's processes
(children included) spent, and the rows per predict call the server formed (from its
``ctcd_model_batch_rows`` histogram: the mean, and the mix of sizes from its buckets) so the
in-process limit can be measured on batches of those sizes.
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
_SAMPLE = re.compile(r'^ctcd_model_batch_rows_(sum|count|bucket)\{([^}]*)\} ([0-9.e+]+)$',
                     re.MULTILINE)
_LE = re.compile(r'le="([^"]+)"')


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


def batch_histogram(metrics_url: str | None) -> dict[str, Any] | None:
    """The server's rows-per-predict histogram, summed over versions (and workers):
    ``{"sum", "count", "buckets": {upper bound: cumulative count}}``."""
    if metrics_url is None:
        return None
    return parse_batch_histogram(httpx.get(metrics_url, timeout=10).text)


def parse_batch_histogram(text: str) -> dict[str, Any]:
    """:func:`batch_histogram` from a Prometheus exposition text."""
    totals: dict[str, Any] = {"sum": 0.0, "count": 0.0, "buckets": {}}
    for part, labels, value in _SAMPLE.findall(text):
        if part != "bucket":
            totals[part] += float(value)
            continue
        bound = _LE.search(labels)
        if bound is not None:
            le = float(bound.group(1))
            totals["buckets"][le] = totals["buckets"].get(le, 0.0) + float(value)
    return totals


def batch_sizes(before: dict[str, Any], after: dict[str, Any]) -> list[list[float]]:
    """The batch sizes of the predicts between two histogram readings, as
    ``[[rows, calls], ...]``: one size per histogram bucket that got calls, the bucket's
    midpoint, all scaled by one factor so that the mix has the mean the server reported
    (its exact rows / calls), each kept inside its bucket."""
    inf = float("inf")
    cumulative = [(le, after["buckets"][le] - before["buckets"].get(le, 0.0))
                  for le in sorted(after["buckets"]) if le != inf]
    cumulative.append((inf, after["count"] - before["count"]))  # above the last bound
    used: list[tuple[float, float, float]] = []  # (lower bound, upper bound, calls)
    low = below = 0.0
    for le, up_to in cumulative:
        if up_to - below > 0:
            used.append((low, le, up_to - below))
        low, below = le, up_to
    total_calls = after["count"] - before["count"]
    if not used or total_calls <= 0:
        return []
    mean = (after["sum"] - before["sum"]) / total_calls
    # above the last bound only the mean says how large a batch was
    mids = [(lo, hi, n, (lo + 1 + hi) / 2 if hi != inf else max(mean, lo + 1))
            for lo, hi, n in used]
    scale = mean * sum(n for *_, n, _ in mids) / sum(n * mid for *_, n, mid in mids)
    return [[float(min(hi, max(lo + 1, round(mid * scale)))), n] for lo, hi, n, mid in mids]


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
    """One load run at one concurrency, with the server's CPU per request, its mean batch
    rows and the mix of batch sizes it formed (``batch_sizes``)."""
    before_batches = batch_histogram(metrics_url)
    before_cpu = cpu_seconds(pid)
    started = time.perf_counter()
    figures = driver(url, body, concurrency, seconds)
    figures["cpu_ms_per_req"] = (cpu_seconds(pid) - before_cpu) * 1000 / max(
        1, figures["requests"])
    figures["wall_s"] = time.perf_counter() - started
    figures["rows_s"] = figures["req_s"] * rows
    after_batches = batch_histogram(metrics_url)
    if before_batches is not None and after_batches is not None:
        predicts = after_batches["count"] - before_batches["count"]
        if predicts > 0:
            figures["batch_rows"] = (after_batches["sum"] - before_batches["sum"]) / predicts
            figures["batch_sizes"] = batch_sizes(before_batches, after_batches)
    return figures
