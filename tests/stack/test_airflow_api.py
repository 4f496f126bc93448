"""The REST client's answer to Airflow on SQLite saying "Database error" (its database stayed
locked past the busy timeout while several tasks wrote): idempotent requests are sent again,
a trigger (POST) is not. The server here is httpx's mock transport, because a real API
server's lock timeout cannot be made to happen on demand; the e2e modules drive a real one."""

from __future__ import annotations

import httpx
import pytest

from ctcd.stack import airflow_api
from ctcd.stack.airflow_api import AirflowApiError, AirflowClient

LOCKED: dict[str, object] = {"detail": {"reason": "Database error", "statement": "hidden"}}


def _client(answers: list[int], seen: list[str]) -> AirflowClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        seen.append(request.method)
        status = answers.pop(0)
        return httpx.Response(status, json=LOCKED if status == 500 else {"dag_id": "d"})

    client = AirflowClient("http://airflow.test", "admin", "admin")
    client._http = httpx.Client(base_url="http://airflow.test",
                                transport=httpx.MockTransport(handle))
    return client


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_api, "LOCKED_RETRY_S", (0.0, 0.0))


def test_an_idempotent_request_is_sent_again_while_the_database_is_locked() -> None:
    seen: list[str] = []
    client = _client([500, 500, 200], seen)
    client.set_paused("d", False)
    assert seen == ["PATCH", "PATCH", "PATCH"]


def test_a_database_locked_three_times_is_an_error_naming_the_request() -> None:
    seen: list[str] = []
    client = _client([500, 500, 500], seen)
    with pytest.raises(AirflowApiError, match=r"PATCH /dags/d answered 500: .*Database error"):
        client.set_paused("d", True)
    assert len(seen) == 3


def test_a_trigger_is_not_sent_twice() -> None:
    seen: list[str] = []
    client = _client([500], seen)
    with pytest.raises(AirflowApiError, match="POST /dags/d/dagRuns answered 500"):
        client.trigger("d")
    assert seen == ["POST"]
