"""The scorer's health port: probes open to the kubelet, ``POST /reload`` behind the token
when one is set. A real HTTP server on loopback, over a stand-in scorer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ctcd.stack.processes import free_port
from ctcd.streaming.health import serve


class Stub:
    def __init__(self) -> None:
        self.ready = True
        self.last_turn = time.monotonic()
        self.reloads = 0

    def status(self) -> dict[str, Any]:
        return {"consumer": "c-1"}

    def reload(self, *_: Any) -> None:
        self.reloads += 1


@pytest.fixture
def probed(request: pytest.FixtureRequest) -> Iterator[tuple[str, Stub]]:
    scorer, port = Stub(), free_port()
    server = serve(scorer, 30.0, "127.0.0.1", port, token=request.param)
    yield f"http://127.0.0.1:{port}", scorer
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("probed", ["t0ken"], indirect=True)
def test_reload_needs_the_token_and_the_probes_do_not(probed: tuple[str, Stub]) -> None:
    url, scorer = probed
    assert httpx.get(f"{url}/healthz").status_code == 200
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200 and ready.json()["consumer"] == "c-1"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "t0ken"}):
        refused = httpx.post(f"{url}/reload", headers=headers)
        assert refused.status_code == 401 and "CTCD_SCORER_RELOAD_TOKEN" in refused.json()["error"]
    assert scorer.reloads == 0
    taken = httpx.post(f"{url}/reload", headers={"Authorization": "Bearer t0ken"})
    assert taken.status_code == 202 and scorer.reloads == 1


@pytest.mark.parametrize("probed", [None], indirect=True)
def test_without_a_token_reload_is_open_and_a_stalled_loop_fails_liveness(
    probed: tuple[str, Stub],
) -> None:
    url, scorer = probed
    assert httpx.post(f"{url}/reload").status_code == 202 and scorer.reloads == 1
    scorer.last_turn = time.monotonic() - 60  # stall_seconds is 30
    assert httpx.get(f"{url}/healthz").status_code == 503
    assert httpx.get(f"{url}/readyz").status_code == 503
    assert httpx.get(f"{url}/nope").status_code == 404
