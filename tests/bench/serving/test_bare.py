"""The bare HTTP limit of the serving benchmark (bench/serving/bare.py): a real uvicorn on
loopback answering each path's fixed body, after reading the whole request."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ctcd.stack.processes import free_port, spawn, stop_process_tree

BARE = Path(__file__).resolve().parents[3] / "bench" / "serving" / "bare.py"
ANSWERS = {"/invocations": b'{"predictions": [1]}',
           "/v2/models/m/infer": b'{"model_name": "m", "outputs": []}'}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("bare")
    files = {}
    for index, (path, body) in enumerate(ANSWERS.items()):
        files[path] = str(work / f"answer-{index}.json")
        Path(files[path]).write_bytes(body)
    (work / "answers.json").write_text(json.dumps(files))
    port = free_port()
    proc = spawn([sys.executable, str(BARE), str(port), str(work / "answers.json")],
                 log_path=work / "bare.log")
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
        yield url
    finally:
        stop_process_tree(proc.pid)


def test_each_path_gets_its_fixed_answer(bare: str) -> None:
    for path, body in ANSWERS.items():
        answer = httpx.post(bare + path, json={"dataframe_split": {"data": [[1.0] * 20]}})
        assert answer.status_code == 200
        assert answer.content == body
        assert answer.headers["content-type"] == "application/json"


def test_an_unknown_path_is_404(bare: str) -> None:
    assert httpx.post(f"{bare}/nowhere", content=b"{}").status_code == 404


def test_a_body_sent_in_chunks_is_read_whole_before_the_answer(bare: str) -> None:
    chunks = [b"x" * 65536] * 32  # 2 MiB, chunked transfer encoding
    with httpx.Client() as client:
        for _ in range(3):  # the connection stays usable: nothing was left unread
            answer = client.post(f"{bare}/invocations", content=iter(chunks))
            assert answer.content == ANSWERS["/invocations"]
