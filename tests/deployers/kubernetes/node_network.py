"""The network side of the test node (:mod:`.kubelet`): the kubelet's HTTPS server, which
serves pod logs to the API server's log proxy (``/containerLogs``), and kube-proxy's part
for ``NodePort`` Services: 127.0.0.1:nodePort (allocated by the API server) forwards to
the ready pods the Service selects, round robin, on the pods' loopback addresses."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ctcd.stack.processes import free_port

if TYPE_CHECKING:
    from tests.deployers.kubernetes.kubelet import Pod


class NodeNetwork:
    """Servers on one asyncio loop in a thread of its own; ``pods`` is the kubelet's (by
    pod name), read for logs and addresses."""

    def __init__(self, certs: Path, pod_port: int, pods: dict[str, Pod]) -> None:
        self.certs, self.pod_port, self.pods = certs, pod_port, pods
        self.port = free_port()
        self._endpoints: dict[tuple[str, str], list[str]] = {}
        self._proxies: dict[tuple[str, str], tuple[int, uvicorn.Server]] = {}
        self._tasks: list[asyncio.Future[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                        name="test-node-network")
        self._thread.start()
        ready.wait(30)

    def stop(self) -> None:
        for _, server in self._proxies.values():
            server.should_exit = True
        self._http.should_exit = True
        self._thread.join(timeout=30)

    # -- kube-proxy's part -------------------------------------------------------------------

    def sync(self, services: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        """Proxy each NodePort Service to its ready pods (the endpoint controller cannot
        keep Endpoints of pods on loopback addresses: the API server refuses them)."""
        wanted, endpoints = {}, {}
        for svc in services:
            if svc["spec"].get("type") != "NodePort":
                continue
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            wanted[key] = int(svc["spec"]["ports"][0]["nodePort"])
            selector = svc["spec"].get("selector") or {}
            endpoints[key] = [
                self.pods[p["metadata"]["name"]].ip for p in pods
                if p["metadata"]["namespace"] == key[0] and p["metadata"]["name"] in self.pods
                and not p["metadata"].get("deletionTimestamp")
                and self.pods[p["metadata"]["name"]].ready
                and all((p["metadata"].get("labels") or {}).get(k) == v
                        for k, v in selector.items())]
        self._endpoints = endpoints
        assert self._loop is not None
        for key, port in wanted.items():
            if key not in self._proxies:
                server = self._proxy(key, port)
                self._proxies[key] = (port, server)
                self._loop.call_soon_threadsafe(
                    lambda s=server: self._tasks.append(asyncio.ensure_future(s.serve())))
        for key in set(self._proxies) - set(wanted):
            self._proxies.pop(key)[1].should_exit = True

    def _proxy(self, key: tuple[str, str], port: int) -> uvicorn.Server:
        rr = itertools.count()

        async def forward(request: Request) -> Response:
            backends = self._endpoints.get(key) or []
            if not backends:
                return PlainTextResponse("no ready endpoints", status_code=503)
            target = backends[next(rr) % len(backends)]
            url = f"http://{target}:{self.pod_port}{request.url.path}"
            try:
                answer = await self._client.request(
                    request.method, url, params=request.query_params,
                    content=await request.body(),
                    headers={k: v for k, v in request.headers.items() if k != "host"})
            except httpx.TransportError as err:  # kube-proxy resets the connection
                return PlainTextResponse(f"upstream: {err}", status_code=502)
            headers = {k: v for k, v in answer.headers.items()
                       if k.lower() not in ("content-length", "content-encoding",
                                            "transfer-encoding")}
            return Response(answer.content, status_code=answer.status_code, headers=headers)

        app = Starlette(routes=[Route("/{path:path}", forward,
                                      methods=["GET", "POST", "PUT", "DELETE"])])
        return uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                             log_level="warning", lifespan="off"))

    # -- the kubelet's HTTPS server (logs) ---------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        certs = self.certs
        config = uvicorn.Config(
            Starlette(routes=[Route("/containerLogs/{ns}/{pod}/{container}", self._logs)]),
            host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
            ssl_certfile=str(certs / "apiserver.crt"), ssl_keyfile=str(certs / "apiserver.key"))
        self._http = uvicorn.Server(config)

        async def main() -> None:
            self._client = httpx.AsyncClient(timeout=30)
            ready.set()
            await self._http.serve()
            for _, server in self._proxies.values():
                server.should_exit = True
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._client.aclose()

        loop.run_until_complete(main())
        loop.close()

    async def _logs(self, request: Request) -> Response:
        pod = self.pods.get(request.path_params["pod"])
        if pod is None or not pod.log.exists():
            return PlainTextResponse("")
        tail = request.query_params.get("tailLines")
        lines = pod.log.read_text(errors="replace").splitlines(keepends=True)
        if tail is not None:
            lines = lines[-int(tail):]
        if request.query_params.get("follow") != "true":
            return PlainTextResponse("".join(lines))

        async def follow() -> Any:
            yield "".join(lines).encode()
            with pod.log.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                while pod.process is not None and pod.process.poll() is None:
                    chunk = fh.read()
                    if chunk:
                        yield chunk
                    await asyncio.sleep(0.1)
                yield fh.read()

        return StreamingResponse(follow(), media_type="text/plain")

