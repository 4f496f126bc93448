"""The bare limits of the serving benchmark (bench/serving/bare.py): a real uvicorn on
loopback answering each path's fixed body, after reading the whole request, and a real
grpc.aio server on the same loop answering every ModelInfer call with a fixed message."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from ctcd.stack.processes import free_port, spawn, stop_process_tree

BENCH = Path(__file__).resolve().parents[3] / "bench" / "serving"
BARE = BENCH / "bare.py"
GRPC_ANSWER = b"\n\x01m\x12\x011"  # a serialized ModelInferResponse: model m, version 1
ANSWERS = {"/invocations": b'{"predictions": [1]}',
           "/v2/models/m/infer": b'{"model_name": "m", "outputs": []}'}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The bare server's HTTP URL and gRPC target."""
    work = tmp_path_factory.mktemp("bare")
    files = {}
    for index, (path, body) in enumerate(ANSWERS.items()):
        files[path] = str(work / f"answer-{index}.json")
        Path(files[path]).write_bytes(body)
    (work / "answers.json").write_text(json.dumps(files))
    (work / "grpc-answer.bin").write_bytes(GRPC_ANSWER)
    port, grpc_port = free_port(), free_port()
    proc = spawn([sys.executable, str(BARE), str(port), str(work / "answers.json"),
                  str(grpc_port), str(work / "grpc-answer.bin")], log_path=work / "bare.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (work / "bare.log").read_text()
            try:
                httpx.post(f"{url}/invocations", content=b"{}")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the bare server did not start"
                time.sleep(0.05)
        yield url, f"127.0.0.1:{grpc_port}"
    finally:
        stop_process_tree(proc.pid)


def test_each_path_gets_its_fixed_answer(bare: tuple[str, str]) -> None:
    for path, body in ANSWERS.items():
        answer = httpx.post(bare[0] + path, json={"dataframe_split": {"data": [[1.0] * 20]}})
        assert answer.status_code == 200
        assert answer.content == body
        assert answer.headers["content-type"] == "application/json"


def test_an_unknown_path_is_404(bare: tuple[str, str]) -> None:
    assert httpx.post(f"{bare[0]}/nowhere", content=b"{}").status_code == 404


def test_a_body_sent_in_chunks_is_read_whole_before_the_answer(bare: tuple[str, str]) -> None:
    chunks = [b"x" * 65536] * 32  # 2 MiB, chunked transfer encoding
    with httpx.Client() as client:
        for _ in range(3):  # the connection stays usable: nothing was left unread
            answer = client.post(f"{bare[0]}/invocations", content=iter(chunks))
            assert answer.content == ANSWERS["/invocations"]


def test_every_model_infer_call_gets_the_fixed_message(bare: tuple[str, str]) -> None:
    with grpc.insecure_channel(bare[1]) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        assert infer(b"", timeout=10) == GRPC_ANSWER
        assert infer(b"\x12\x01x" * 1000, timeout=10) == GRPC_ANSWER  # not read
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"", timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_benchmarks_grpc_client_drives_it(bare: tuple[str, str], tmp_path: Path) -> None:
    request = tmp_path / "request.bin"
    request.write_bytes(b"\n\x01m")
    loaded = subprocess.run([sys.executable, str(BENCH / "grpc_load.py"), bare[1],
                             str(request), "4", "0.5"], capture_output=True, text=True,
                            timeout=60, check=True)
    figures = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert figures["failed"] == 0
    assert figures["requests"] > 4
    assert 0 < figures["p50_us"] <= figures["p99_us"]
