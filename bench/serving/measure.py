"""Measuring one model: every server of it started, each cell driven on each server back to
back, the in-process limit measured right after our servers' cells, the answers compared."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bare
import grpc_load
import httpx
import load
import peers
from grid import CONCURRENCY, KIND_PROTOCOLS, MODEL_NAME, ONLY_CELLS, PROTOCOLS, ROWS, cell_key
from limit import Limit

from ctcd.stack.processes import stop_process_tree


def _route(protocol: str, started: peers.Started, name: str) -> str:
    port = started.port
    if protocol == "grpc":
        return f"127.0.0.1:{started.grpc_port}"
    if protocol == "mlflow":
        return f"http://127.0.0.1:{port}/invocations"
    return f"http://127.0.0.1:{port}/v2/models/{name}/infer"


def _answer(url: str, body: Path) -> bytes:
    answer = httpx.post(url, content=body.read_bytes(),
                        headers={"Content-Type": "application/json"}, timeout=60)
    answer.raise_for_status()
    return answer.content


def _grpc_answer(target: str, request: Path) -> bytes:
    """What the gRPC server at ``target`` answers to the serialized ``request``."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        answer: bytes = channel.unary_unary(grpc_load.METHOD)(request.read_bytes(), timeout=30)
    return answer


def _predictions(protocol: str, url: str, body: Path) -> list[Any]:
    doc = json.loads(_answer(url, body))
    if protocol == "mlflow":
        return list(doc["predictions"])
    return list(doc["outputs"][0]["data"])



def _start_all(kind: str, model: dict[str, Any], mlserver_bin: Path,
               work: Path) -> dict[str, tuple[peers.Started, tuple[str, ...]]]:
    """Every server of this model, started one after the other (each cold start alone),
    with the routes it is measured on. MLServer: the V2 and gRPC routes on its runtime for
    the model's library, the MLflow route on its MLflow runtime (the only one with
    ``/invocations``). For the random forest also ``mlflow models serve`` and the bare HTTP
    and gRPC limits (answering what our compiled server answers to the 1-row requests)."""
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
            ours = servers.get("ctcd_compiled", servers["ctcd"])[0]
            answers = {urlsplit(_route(p, ours, name)).path: _answer(
                _route(p, ours, name), model["bodies"][p, 1]) for p in PROTOCOLS}
            grpc_answer = _grpc_answer(_route("grpc", ours, name), model["bodies"]["grpc", 1]) \
                if "grpc" in KIND_PROTOCOLS[kind] else None
            servers["bare"] = (bare.start(answers, work, grpc_answer),
                               PROTOCOLS + (("grpc",) if grpc_answer is not None else ()))
    except BaseException:
        for started, _ in servers.values():
            stop_process_tree(started.proc.pid)
        raise
    return servers


def measure_model(kind: str, model: dict[str, Any], mlserver_bin: Path, work: Path,
                   seconds: float) -> dict[str, Any]:
    """All servers run at once, idle but for the one under load: each cell is measured on
    every server back to back, so a ratio compares figures taken seconds apart (other
    load on a shared machine drifts over minutes)."""
    name = MODEL_NAME[kind]
    cold = peers.cold_starts(model["dir"], name, model["version"], work) \
        if model["compiled"]["used"] else None
    servers = _start_all(kind, model, mlserver_bin, work)
    try:
        limit = Limit(kind, model, work, seconds)
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
                    if protocol in PROTOCOLS and server != "bare":
                        figures[server].setdefault(f"answers_{protocol}", _predictions(
                            protocol, url, model["bodies"][protocol, 100]))
                    driver(url, body, 8, 1)  # warm connections, caches, the batcher
                for concurrency in CONCURRENCY:
                    serving_now = [(s, st) for s, st in serving if s not in ONLY_CELLS
                                   or (protocol, concurrency, rows) in ONLY_CELLS[s]]
                    for server, started in serving_now:
                        cell = load.cell(started.proc.pid, _route(protocol, started, name),
                                         body, rows, concurrency, seconds, started.metrics_url,
                                         driver)
                        cell["runtime"] = started.runtime
                        if server in ("ctcd", "ctcd_w2"):  # right after the cell
                            _add_limit(cell, rows, limit, 2 if server == "ctcd_w2" else 1)
                        figures[server][cell_key(protocol, concurrency, rows)] = cell
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



def _add_limit(cell: dict[str, Any], rows: int, limit: Limit, cores: int) -> None:
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

