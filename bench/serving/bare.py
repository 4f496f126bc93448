"""The bare HTTP limit: uvicorn answering a fixed body, what no model server can beat here.

A raw ASGI app (no framework, no parsing, no model) on one uvicorn worker with the
settings our server runs with (uvloop, httptools, no access log): it reads each request's
body and answers, for a path it was given, the fixed bytes our server answered to the same
request (so the response is as large as ours). Driven by the same load generator and
request bodies as the model servers' cells, it is the ceiling of the compiled cells:
their requests/s are printed as a share of it.

Run by :func:`start`: ``python bare.py PORT ANSWERS_JSON``, where ANSWERS_JSON maps a
request path to the file holding its answer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
HEADERS = [(b"content-type", b"application/json")]


def app_for(answers: dict[str, bytes]) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """The ASGI app answering ``answers[path]`` (404 for another path) to any request."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:  # the whole request body is read, as any server must
            more = (await receive()).get("more_body", False)
        body = answers.get(scope["path"])
        await send({"type": "http.response.start", "status": 200 if body else 404,
                    "headers": HEADERS})
        await send({"type": "http.response.body", "body": body or b""})

    return app


def start(answers: dict[str, bytes], work: Path) -> Any:
    """The bare server, started in a process of its own (as the model servers are) and
    ready: a :class:`peers.Started` named ``bare``."""
    import peers

    from ctcd.stack.processes import free_port, spawn

    port = free_port()
    files = {}
    for index, (path, body) in enumerate(answers.items()):
        files[path] = str(work / f"bare-answer-{port}-{index}.json")
        Path(files[path]).write_bytes(body)
    doc = work / f"bare-answers-{port}.json"
    doc.write_text(json.dumps(files))
    log = work / f"bare-{port}.log"
    started = time.perf_counter()
    proc = spawn([sys.executable, str(Path(__file__)), str(port), str(doc)], log_path=log)
    probe = next(iter(answers))
    cold, cpu = peers.wait_ready(proc, f"http://127.0.0.1:{port}{probe}", started, log, "bare",
                                 method="POST")
    return peers.Started(proc, port, cold, None, "bare", cold_start_s_cpu=cpu)


def main() -> int:
    import uvicorn

    port, doc = int(sys.argv[1]), Path(sys.argv[2])
    answers = {path: Path(file).read_bytes() for path, file in json.loads(doc.read_text()).items()}
    uvicorn.run(app_for(answers), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                lifespan="on", access_log=False, log_level="warning", timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
