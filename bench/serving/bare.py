"""The bare limits: uvicorn answering a fixed body, and grpcio answering a fixed message,
what no model server can beat here.

A raw ASGI app (no framework, no parsing, no model) on one uvicorn worker with the
settings our server runs with (uvloop, httptools, no access log): it reads each request's
body and answers, for a path it was given, the fixed bytes our server answered to the same
request (so the response is as large as ours). Given a gRPC answer too, a grpc.aio server
on the same event loop (as our server runs its gRPC transport, with its options) answers
every ``ModelInfer`` call with it, unread requests in, fixed bytes out. Driven by the same
load generators and requests as the model servers' cells, they are the ceilings of the
compiled cells: their requests/s are printed as a share of them.

Run by :func:`start`: ``python bare.py PORT ANSWERS_JSON [GRPC_PORT GRPC_ANSWER_FILE]``,
where ANSWERS_JSON maps a request path to the file holding its answer.
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


def app_for(answers: dict[str, bytes], grpc_answer: tuple[int, bytes] | None = None
            ) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """The ASGI app answering ``answers[path]`` (404 for another path) to any request; with
    ``grpc_answer`` (port, bytes), the gRPC server is started with it and stopped at its end."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            grpc_server = None
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if grpc_answer is not None:
                        grpc_server = await start_grpc(*grpc_answer)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if grpc_server is not None:
                        await grpc_server.stop(grace=None)
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


async def start_grpc(port: int, answer: bytes) -> Any:
    """A grpc.aio server on the running loop, answering ``ModelInfer`` with ``answer``, with
    our server's message size limit (its default ``max_body_bytes``)."""
    import grpc

    from ctcd.serving.grpc import SERVICE
    from ctcd.serving.settings import ServerSettings

    async def model_infer(request: bytes, context: Any) -> bytes:
        return answer

    limit = ServerSettings.model_fields["max_body_bytes"].default
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


def start(answers: dict[str, bytes], work: Path, grpc_answer: bytes | None = None) -> Any:
    """The bare server, started in a process of its own (as the model servers are) and
    ready: a :class:`peers.Started` named ``bare`` (with a gRPC port when ``grpc_answer``
    is given)."""
    import peers

    from ctcd.stack.processes import free_port, spawn

    port = free_port()
    files = {}
    for index, (path, body) in enumerate(answers.items()):
        files[path] = str(work / f"bare-answer-{port}-{index}.json")
        Path(files[path]).write_bytes(body)
    doc = work / f"bare-answers-{port}.json"
    doc.write_text(json.dumps(files))
    command = [sys.executable, str(Path(__file__)), str(port), str(doc)]
    grpc_port = None
    if grpc_answer is not None:
        grpc_port = free_port()
        answer_file = work / f"bare-grpc-answer-{grpc_port}.bin"
        answer_file.write_bytes(grpc_answer)
        command += [str(grpc_port), str(answer_file)]
    log = work / f"bare-{port}.log"
    started = time.perf_counter()
    proc = spawn(command, log_path=log)
    probe = next(iter(answers))
    # the gRPC server starts before uvicorn serves HTTP (the app's lifespan startup)
    cold, cpu = peers.wait_ready(proc, f"http://127.0.0.1:{port}{probe}", started, log, "bare",
                                 method="POST")
    return peers.Started(proc, port, cold, None, "bare", grpc_port, cold_start_s_cpu=cpu)


def main() -> int:
    import uvicorn

    port, doc = int(sys.argv[1]), Path(sys.argv[2])
    answers = {path: Path(file).read_bytes() for path, file in json.loads(doc.read_text()).items()}
    grpc_answer = (int(sys.argv[3]), Path(sys.argv[4]).read_bytes()) if len(sys.argv) > 4 \
        else None
    uvicorn.run(app_for(answers, grpc_answer), host="127.0.0.1", port=port, loop="uvloop",
                http="httptools", lifespan="on", access_log=False, log_level="warning",
                timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
