"""The streaming cell of ``bench_batch.py``: messages/s through one scorer
(``python -m ctcd.streaming``) on a loopback ``redis-server`` against the same rows sent one
per request to the model server over HTTP by one client; then the messages lost when a
scorer is SIGKILLed mid-batch and a second one takes over (target 0)."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any


def bench_streaming(work: Path, messages: int, *, model: str,
                    env: dict[str, str]) -> dict[str, Any]:
    import httpx
    import orjson

    from ctcd.data.churn import FEATURES, generate_snapshot
    from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http
    from ctcd.streaming import localredis
    from ctcd.streaming.client import read, send

    rows = generate_snapshot(date(2026, 1, 3), rows=max(messages, 1000))[list(FEATURES)]
    records: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in rows.head(messages).to_dict(orient="records")]
    server = localredis.start(work / "redis")
    client = server.client()
    procs: list[Any] = []

    def scorer(stream: str, consumer: str, **options: Any) -> Any:
        argv = [sys.executable, "-m", "ctcd.streaming", "--model-uri", f"models:/{model}@champion",
                "--redis-url", server.url, "--stream", stream, "--consumer", consumer,
                "--batch-size", "256", "--log-level", "warning"]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        log = work / f"{consumer}.log"
        proc = spawn(argv, log_path=log, env=env)
        procs.append(proc)
        deadline = time.monotonic() + 300
        while "scorer ready" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"scorer did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        return proc

    try:
        # Throughput: one scorer, messages sent as fast as one producer can.
        scorer("rate", "rate-0")
        started = time.perf_counter()
        send(client, "rate", records)
        sent_s = time.perf_counter() - started
        while client.xlen("rate:predictions") < messages:
            time.sleep(0.01)
        stream_s = time.perf_counter() - started

        # The same rows to the model server over HTTP, one row per request, one client.
        port = free_port()
        log = work / "server.log"
        http = spawn([sys.executable, "-m", "ctcd.serving", "--model-uri", f"models:/{model}/1",
                      "--model-name", model, "--model-version", "1", "--port", str(port)],
                     log_path=log, env=env)
        procs.append(http)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ping", timeout=300, process=http, log_path=log)
        http_rows = min(messages, 3000)
        with httpx.Client(base_url=url, timeout=30) as session:
            started = time.perf_counter()
            for record in records[:http_rows]:
                answer = session.post("/invocations", content=orjson.dumps(
                    {"dataframe_records": [record]}), headers={"Content-Type":
                                                               "application/json"})
                answer.raise_for_status()
            http_s = time.perf_counter() - started

        # Loss: kill a scorer mid-batch (frozen while it holds entries), a second takes over.
        ids = set(send(client, "kill", records))
        first = scorer("kill", "kill-0")
        while client.xlen("kill:predictions") < messages // 10:
            time.sleep(0.01)
        held = 0
        for _ in range(500):
            os.kill(first.pid, signal.SIGSTOP)
            held = _held(client, "kill", "kill-0")
            if held:
                break
            os.kill(first.pid, signal.SIGCONT)
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        scored_before = client.xlen("kill:predictions")
        scorer("kill", "kill-1", min_idle_ms=1000)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            [group] = client.xinfo_groups("kill")
            if group["lag"] == 0 and group["pending"] == 0:
                break
            time.sleep(0.2)
        outputs = [o["input_id"] for o in read(client, "kill:predictions")]
        lost = len(ids - set(outputs))
    finally:
        for proc in procs:
            stop_process_tree(proc.pid, timeout=10)
        client.close()
        server.stop()
    return {
        "messages": messages, "scorer_msgs_per_s": messages / stream_s,
        "producer_msgs_per_s": messages / sent_s, "http_rows": http_rows,
        "http_one_client_rows_per_s": http_rows / http_s,
        "stream_vs_http": (messages / stream_s) / (http_rows / http_s),
        "kill_messages": messages, "kill_held_pending": held,
        "kill_scored_before": scored_before, "kill_lost": lost,
        "kill_duplicates": len(outputs) - len(set(outputs)),
    }


def _held(client: Any, stream: str, consumer: str) -> int:
    for entry in client.xpending(stream, "ctcd-scorers").get("consumers") or []:
        if entry["name"] in (consumer, consumer.encode()):
            return int(entry["pending"])
    return 0
