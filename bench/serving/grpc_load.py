"""A closed-loop gRPC load client for ``ModelInfer`` (what wrk is for the HTTP cells).

``python grpc_load.py TARGET REQUEST_FILE CONCURRENCY SECONDS`` sends the serialized
``inference.ModelInferRequest`` in REQUEST_FILE from CONCURRENCY coroutines over one
HTTP/2 channel for SECONDS, and prints one JSON line: requests, failed, duration_us,
p50_us, p99_us. The request is sent pre-serialized and the answer is not parsed, so the
client spends its CPU on the transport only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def run(target: str, payload: bytes, concurrency: int, seconds: float) -> dict[str, int]:
    latencies: list[float] = []
    failed = 0
    async with grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out
        await call(payload, timeout=30)  # connected and warm
        started = time.perf_counter()
        deadline = started + seconds

        async def client() -> None:
            nonlocal failed
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    await call(payload, timeout=10)
                except grpc.aio.AioRpcError:
                    failed += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        duration = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> int:
        return int(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6) \
            if latencies else 0

    return {"requests": len(latencies), "failed": failed, "duration_us": int(duration * 1e6),
            "p50_us": pct(0.5), "p99_us": pct(0.99)}


def main() -> int:
    target, request_file, concurrency, seconds = sys.argv[1:5]
    figures = asyncio.run(run(target, Path(request_file).read_bytes(), int(concurrency),
                              float(seconds)))
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
