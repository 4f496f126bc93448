"""A shadow on the deployments view, for real: Airflow's API server with the plugin loaded,
a model server started by the local deployer, and a ``shadow`` deploy running in the
background exactly as ``ctcd models shadow`` runs one (``deploy_model`` with the shadow
strategy, waiting for its analysis). The page must show the shadow as a shadow with the
server's own comparison, and its two actions must end it as they say, read back through
the deployer, while the waiting deploy ends with that outcome.
"""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tests.api_server import ApiServer
from tests.oracle import pyfunc_predictions

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.errors import RolledBack
from ctcd.services import ServiceHandle
from ctcd.settings import Settings
from ctcd.ui.views import milliseconds, number, percent

pytestmark = pytest.mark.e2e
MODEL = "churn-ui-shadow"
PORTS = (9750, 9759)
REQUESTS = 24
# the shadow never ends by itself while a test looks at it: too many requests to judge on
WAITING = {"name": "shadow", "mirror_percent": 100, "min_requests": 100_000,
           "max_seconds": 120, "poll_seconds": 0.2}


@dataclass
class Shadowed:
    """A ``shadow`` deploy running on its own thread, and how it ended."""

    thread: threading.Thread
    result: dict[str, Any] = field(default_factory=dict)

    def ended(self, timeout: float = 30.0) -> dict[str, Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the shadow deploy did not end"
        return self.result


@dataclass
class Stack:
    url: str
    api: ApiServer
    deployer: LocalDeployer
    serving: ServiceHandle
    models: dict[str, Any]  # version -> RegisteredModel
    live: str
    candidate: str

    def browser(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, cookies={"_token": self.api.token("admin")},
                            timeout=60)

    def act(self, action: str) -> httpx.Response:
        with self.browser() as client:
            return client.post(f"/ctcd/api/deployments/{self.serving.service_id}/{action}",
                               json={})

    def start_shadow(self, version: str) -> Shadowed:
        model = self.models[version]
        config = DeploymentConfig(model_name=MODEL, model_uri=model.uri, model_version=version,
                                  mlflow_run_id=model.run_id)
        shadowed = Shadowed(threading.Thread(target=lambda: None))

        def run() -> None:
            try:
                shadowed.result["handle"] = self.deployer.deploy_model(
                    config, strategy=WAITING, timeout=150)
            except Exception as err:  # the test reads how it ended
                shadowed.result["error"] = err

        shadowed.thread = threading.Thread(target=run, daemon=True)
        shadowed.thread.start()
        deadline = time.monotonic() + 60
        while self.described().shadow is None:
            assert shadowed.thread.is_alive(), shadowed.result
            assert time.monotonic() < deadline, "the shadow never started"
            time.sleep(0.1)
        return shadowed

    def described(self) -> Any:
        return self.deployer.describe_model_server(self.serving.service_id)


@pytest.fixture(scope="module")
def stack(api_server: ApiServer, model_factory: Any, ops_dag: None) -> Iterator[Stack]:
    deployer = LocalDeployer(Settings(home=api_server.ctcd_home, server_port_range=PORTS))
    first = model_factory(name=MODEL, kind="logistic_regression")
    second = model_factory(name=MODEL, kind="hist_gradient_boosting")
    try:
        serving = deployer.deploy_model(DeploymentConfig(
            model_name=MODEL, model_uri=first.uri, model_version=first.version,
            mlflow_run_id=first.run_id, dag_id="churn_training",
            run_id=f"manual__v{first.version}", task_id="deploy"), "replace", timeout=180)
        yield Stack(api_server.url, api_server, deployer, serving,
                    {first.version: first, second.version: second}, first.version,
                    second.version)
    finally:
        for handle in deployer.find_model_server(model_name=MODEL):
            deployer.delete_model_server(handle.service_id, timeout=30, force=True)


def _send(stack: Stack, rows: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=stack.serving.endpoint, timeout=30) as client:
        for row in rows:
            response = client.post("/invocations", json={"dataframe_records": [row]})
            assert response.status_code == 200, response.text
            assert response.headers["x-model-version"] == stack.live  # never the shadow


def _comparison(stack: Stack, n: int) -> dict[str, Any]:
    """The server's counters once all ``n`` copies ended."""
    deadline = time.monotonic() + 30
    while True:
        shadow = stack.described().shadow
        c = shadow["cumulative"]
        if c["answered"] + c["errors"] + c["timeouts"] >= n:
            return dict(shadow)
        assert time.monotonic() < deadline, f"the shadow never answered {n} copies: {c}"
        time.sleep(0.1)


def _cells(table_row: str) -> list[str]:
    return [html.unescape(c).strip() for c in re.findall(r"<td>(.*?)</td>", table_row, re.S)]


def _row(page: str, service_id: str) -> str:
    start = page.index(f'data-id="{service_id}"')
    return page[start:page.index("</tr>", start)]


def _recorded(stack: Stack, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.url}/api/v2/dags/model_server_ops/dagRuns/{run_id}",
                         headers=stack.api.headers("admin"))
    assert response.status_code == 200, response.text
    recorded: dict[str, Any] = response.json()["conf"]["recorded"]
    return recorded


def test_a_shadow_is_shown_with_the_servers_comparison_and_dropped(stack: Stack) -> None:
    shadowed = stack.start_shadow(stack.candidate)
    rows = stack.models[stack.live].example.to_dict(orient="records")
    sent = [rows[i % len(rows)] for i in range(REQUESTS)]
    _send(stack, sent)
    state = _comparison(stack, REQUESTS)
    c = state["cumulative"]
    # the counters are the server's own: every request mirrored, and the agreement is what
    # MLflow's own loader says of the two versions on the same rows
    assert (c["mirrored"], c["answered"], c["dropped"]) == (REQUESTS, REQUESTS, 0)
    live = pyfunc_predictions(stack.models[stack.live].uri, sent)
    shadow = pyfunc_predictions(stack.models[stack.candidate].uri, sent)
    agreed = sum(a == b for a, b in zip(live, shadow, strict=True))
    assert c["labels"]["agreement"] == pytest.approx(agreed / REQUESTS)

    with stack.browser() as client:
        listing = client.get("/ctcd/deployments")
        page = client.get(f"/ctcd/deployments/{stack.serving.service_id}")
    assert listing.status_code == 200 and page.status_code == 200, listing.text
    row = html.unescape(_row(listing.text, stack.serving.service_id))
    assert (f"shadow: version {stack.candidate} shadows version {stack.live} with 100% of "
            f"requests mirrored") in row
    assert f"{REQUESTS} mirrored, 0 dropped, agreement {c['labels']['agreement']:.1%}" in row
    assert ">Promote shadow</button>" in row and ">Drop shadow</button>" in row
    assert ">Roll back</button>" not in row and ">Promote</button>" not in row
    assert f"p99 live {milliseconds(c['latency_ms']['live']['p99'])}" in row

    text = page.text
    assert f"Version {stack.candidate} shadows version {stack.live}: 100" in text
    table = text[text.index('id="shadow"'):text.index("</table>", text.index('id="shadow"'))]
    cumulative = _cells(table[table.index('class="cumulative"'):].split("</tr>")[0])
    lat = c["latency_ms"]
    diff = c["numbers"]["abs_difference"]
    assert cumulative == [
        "whole shadow", str(REQUESTS), "0", str(REQUESTS), "0", "0",
        percent(c["error_rate"]), percent(c["labels"]["agreement"]),
        number(diff["mean"]), number(diff["p95"]), number(diff["max"]),
        " / ".join(milliseconds(lat["live"][q]) for q in ("p50", "p95", "p99")),
        " / ".join(milliseconds(lat["shadow"][q]) for q in ("p50", "p95", "p99")),
        str(c["disagreeing_requests"])]
    windows = [_cells(r) for r in table.split('class="window"')[1:]]
    assert windows and sum(int(w[1]) for w in windows) == REQUESTS  # per window add up
    assert ">Promote shadow</button>" in text and ">Roll back</button>" not in text

    # a shadow is no canary: the rollout actions refuse and change nothing
    for action in ("rollback", "promote"):
        refused = stack.act(action)
        assert refused.status_code == 409, refused.text
        assert "promote_shadow" in refused.json()["message"]
    assert stack.described().shadow is not None

    dropped = stack.act("drop_shadow")
    assert dropped.status_code == 200 and dropped.json()["ok"], dropped.text
    assert f"mirrored {REQUESTS}" in dropped.json()["message"]  # the evidence, recorded
    after = stack.described()
    assert after.shadow is None
    assert after.handle.model_version == stack.live
    assert [v.version for v in after.versions] == [stack.live]
    assert isinstance(shadowed.ended().get("error"), RolledBack)  # the deploy ended with it
    recorded = _recorded(stack, dropped.json()["recorded_run"])
    assert (recorded["action"], recorded["outcome"]) == ("drop_shadow", "succeeded")
    nothing = stack.act("drop_shadow")
    assert nothing.status_code == 409 and "runs no shadow" in nothing.json()["message"]


def test_promoting_a_shadow_makes_it_live_and_ends_its_deploy(stack: Stack) -> None:
    shadowed = stack.start_shadow(stack.candidate)
    rows = stack.models[stack.live].example.to_dict(orient="records")
    _send(stack, rows[:8])
    _comparison(stack, 8)
    promoted = stack.act("promote_shadow")
    assert promoted.status_code == 200 and promoted.json()["ok"], promoted.text
    after = stack.described()
    assert after.shadow is None
    assert after.handle.model_version == stack.candidate
    assert [(v.version, v.weight) for v in after.versions] == [(stack.candidate, 1.0)]
    ended = shadowed.ended()
    assert "error" not in ended, ended
    assert ended["handle"].model_version == stack.candidate
    with httpx.Client(base_url=stack.serving.endpoint, timeout=30) as client:
        answer = client.post("/invocations", json={"dataframe_records": rows[:1]})
    assert answer.headers["x-model-version"] == stack.candidate
    recorded = _recorded(stack, promoted.json()["recorded_run"])
    assert (recorded["action"], recorded["outcome"]) == ("promote_shadow", "succeeded")
