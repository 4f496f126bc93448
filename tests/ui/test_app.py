"""The deployments view for real: Airflow's own API server (``airflow api-server``) with the
plugin loaded, in front of real model servers started by the local deployer, and the real
MLflow tracking server of the session. Requests go over HTTP as the UI's browser sends them
(the ``_token`` session cookie) or as an API client does (a bearer token); users are
Airflow's own (the simple auth manager): ``admin`` and the read-only ``viewer``.

One server serves, one is hung (SIGSTOP: it accepts connections and never answers), so the
page must say so within its budget instead of waiting for it.
"""

from __future__ import annotations

import html
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.api_server import ApiServer

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.services import ServiceHandle
from ctcd.settings import Settings

pytestmark = pytest.mark.e2e
MODEL = "churn-ui"
PORTS = (9720, 9749)


@dataclass(frozen=True)
class Ui:
    url: str
    serving: ServiceHandle
    hung: ServiceHandle
    versions: tuple[str, str]
    deployer: LocalDeployer
    api: ApiServer

    def token(self, user: str) -> str:
        return self.api.token(user)

    def browser(self, user: str) -> httpx.Client:
        """What the UI's page sends: the session cookie its login set."""
        return httpx.Client(base_url=self.url, cookies={"_token": self.token(user)},
                            timeout=30)

    def act(self, user: str, target: str, action: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("json", {})
        with self.browser(user) as client:
            return client.post(f"/ctcd/api/deployments/{target}/{action}", **kwargs)


@pytest.fixture(scope="module")
def ui(api_server: ApiServer, model_factory: Any, ops_dag: None) -> Iterator[Ui]:
    deployer = LocalDeployer(Settings(home=api_server.ctcd_home, server_port_range=PORTS))
    first = model_factory(name=MODEL, kind="logistic_regression")
    second = model_factory(name=MODEL, kind="logistic_regression")
    hung_model = model_factory(name=f"{MODEL}-hung", kind="logistic_regression")
    hung: ServiceHandle | None = None
    try:
        for model in (first, second):
            serving = deployer.deploy_model(DeploymentConfig(
                model_name=MODEL, model_uri=model.uri, model_version=model.version,
                mlflow_run_id=model.run_id, dag_id="churn_training",
                run_id=f"manual__v{model.version}", task_id="deploy"), "replace", timeout=180)
        hung = deployer.deploy_model(DeploymentConfig(
            model_name=hung_model.name, model_uri=hung_model.uri,
            model_version=hung_model.version), timeout=180)
        os.kill(_pid(deployer, hung), signal.SIGSTOP)
        yield Ui(api_server.url, serving, hung, (first.version, second.version), deployer,
                 api_server)
    finally:
        if hung is not None:
            os.kill(_pid(deployer, hung), signal.SIGCONT)
        for handle in deployer.find_model_server():
            deployer.delete_model_server(handle.service_id, timeout=30, force=True)


def _pid(deployer: LocalDeployer, handle: ServiceHandle) -> int:
    pid = deployer.record(handle.service_id).pid
    assert pid is not None
    return pid


def _row(page: str, service_id: str) -> str:
    start = page.index(f'data-id="{service_id}"')
    return page[start:page.index("</tr>", start)]


def test_anonymous_requests_are_refused(ui: Ui) -> None:
    assert httpx.get(f"{ui.url}/ctcd/deployments").status_code == 401
    assert httpx.get(f"{ui.url}/ctcd/deployments/{ui.serving.service_id}").status_code == 401
    response = httpx.post(f"{ui.url}/ctcd/api/deployments/{ui.serving.service_id}/stop",
                          json={})
    assert response.status_code == 401
    forged = httpx.get(f"{ui.url}/ctcd/deployments", cookies={"_token": "not-a-token"})
    assert forged.status_code in (401, 403)


def test_the_plugin_adds_a_navigation_entry_and_a_dag_run_tab(ui: Ui) -> None:
    response = httpx.get(f"{ui.url}/api/v2/plugins",
                         headers={"Authorization": f"Bearer {ui.token('admin')}"})
    assert response.status_code == 200, response.text
    [plugin] = [p for p in response.json()["plugins"] if p["name"] == "ctcd"]
    views = {v["destination"]: v for v in plugin["external_views"]}
    assert views["nav"]["href"] == "ctcd/deployments"
    assert views["nav"]["url_route"] == "deployments"
    assert views["dag_run"]["href"] == "ctcd/runs/{DAG_ID}/{RUN_ID}"
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/ctcd"]
    assert any("DeploymentPageLink" in link for link in plugin["operator_extra_links"])
    with ui.browser("admin") as client:  # the UI's own route for it (the page's frame)
        assert client.get("/plugin/deployments").status_code == 200


def test_the_list_shows_what_serves_and_a_hung_server_does_not_hold_it(ui: Ui) -> None:
    with ui.browser("admin") as client:
        started = time.perf_counter()
        response = client.get("/ctcd/deployments")
        took = time.perf_counter() - started
    assert response.status_code == 200, response.text
    page = response.text
    serving = _row(page, ui.serving.service_id)
    assert 'data-status="running"' in serving
    assert f"{MODEL} v{ui.versions[1]}" in serving
    assert f"v{ui.versions[1]} 100%" in serving  # traffic
    assert "stable: version" in serving
    assert "/dags/churn_training/runs/manual__v" in serving  # the run that deployed it
    assert f"#/models/{MODEL}/versions/{ui.versions[1]}" in serving  # registry link
    assert ">Stop</button>" in serving and ">Roll back</button>" in serving
    hung = _row(page, ui.hung.service_id)
    assert 'data-status="no answer"' in hung and "did not answer within" in hung
    assert took < 3.0, f"the page took {took:.2f}s with one hung server"


def test_a_deployment_page_shows_versions_history_lineage_and_logs(ui: Ui) -> None:
    from mlflow import MlflowClient

    gate = "accuracy 0.91 >= champion 0.88 + min_improvement 0.00: deploy"
    MlflowClient().set_model_version_tag(MODEL, ui.versions[0], "ctcd.gate", gate)
    with ui.browser("admin") as client:
        response = client.get(f"/ctcd/deployments/{ui.serving.service_id}")
        stats = client.get(f"/ctcd/api/deployments/{ui.serving.service_id}/stats")
        missing = client.get("/ctcd/deployments/no-such-server")
    assert response.status_code == 200, response.text
    page = response.text
    history = page[page.index('id="history"'):]
    assert "replace" in history and "succeeded" in history
    assert f"manual__v{ui.versions[0]}" in history and f"manual__v{ui.versions[1]}" in history
    assert f"gate: {html.escape(gate)}" in history  # the decision that deployed v1
    lineage = page[page.index('id="lineage"'):page.index('id="history"')]
    assert f"{MODEL} v{ui.versions[1]}" in lineage and "MLflow run" in lineage
    logs = page[page.index('id="logs"'):]
    assert "(no logs" not in logs and "did not arrive" not in logs
    assert stats.status_code == 200
    assert ui.versions[1] in stats.json()["versions"]
    assert missing.status_code == 404 and "no-such-server" in missing.text


def test_a_read_only_user_sees_no_actions_and_cannot_act(ui: Ui) -> None:
    with ui.browser("viewer") as client:
        page = client.get("/ctcd/deployments").text
    assert "read-only" in _row(page, ui.serving.service_id)
    assert ">Stop</button>" not in _row(page, ui.serving.service_id)
    response = ui.act("viewer", ui.serving.service_id, "stop")
    assert response.status_code == 403
    assert "edit rights on the DAG 'churn_training'" in response.text
    assert ui.deployer.status(ui.serving.service_id).value == "running"


def test_actions_accept_json_only_and_name_what_is_wrong(ui: Ui) -> None:
    target = ui.serving.service_id
    form = ui.act("admin", target, "stop", json=None, data={"x": "1"})
    assert form.status_code == 415 and "JSON" in form.text
    unknown = ui.act("admin", target, "explode")
    assert unknown.status_code == 400 and "explode" in unknown.json()["message"]
    nothing = ui.act("admin", target, "promote")  # no rollout in progress
    assert nothing.status_code == 409 and "no rollout in progress" in nothing.json()["message"]
    assert ui.deployer.status(target).value == "running"


def test_stop_start_and_rollback_are_done_and_recorded_as_ops_runs(ui: Ui) -> None:
    target = ui.serving.service_id
    stopped = ui.act("admin", target, "stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["ok"] is True
    assert ui.deployer.status(target).value == "unreachable"
    with ui.browser("admin") as client:
        assert 'data-status="stopped"' in _row(client.get("/ctcd/deployments").text, target)
    started = ui.act("admin", target, "start")
    assert started.status_code == 200 and started.json()["ok"], started.text
    rolled = ui.act("admin", target, "rollback")
    assert rolled.status_code == 200 and rolled.json()["ok"], rolled.text
    [now] = [h for h in ui.deployer.find_model_server() if h.service_id == target]
    assert now.model_version == ui.versions[0]

    run_id = rolled.json()["recorded_run"]
    assert run_id, rolled.json()
    response = httpx.get(f"{ui.url}/api/v2/dags/model_server_ops/dagRuns/{run_id}",
                         headers={"Authorization": f"Bearer {ui.token('admin')}"})
    assert response.status_code == 200, response.text
    recorded = response.json()["conf"]["recorded"]
    assert (recorded["action"], recorded["by"], recorded["outcome"]) == (
        "rollback", "admin", "succeeded")
    assert "rollback of server" in response.json()["note"]


def test_the_dag_run_tab_says_what_a_run_deployed_or_that_it_did_not(ui: Ui) -> None:
    with ui.browser("admin") as client:
        response = client.get("/ctcd/runs/churn_training/no_such_run")
    assert response.status_code == 200
    assert "No run no_such_run of churn_training" in response.text


def test_data_docs_are_served_to_signed_in_users_and_only_from_the_site(ui: Ui) -> None:
    from ctcd.ui.views import data_docs_link
    from ctcd.validation.docs_site import data_docs_root

    site = data_docs_root(ui.api.ctcd_home) / "local_site" / "validations"
    site.mkdir(parents=True, exist_ok=True)
    (site / "page.html").write_text("<h1>churn validation</h1>")
    secret = ui.api.ctcd_home / "servers" / "outside.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("not part of the site")
    path = "/ctcd/data-docs/local_site/validations/page.html"
    assert httpx.get(f"{ui.url}{path}").status_code == 401
    with ui.browser("viewer") as client:
        page = client.get(path)
        assert page.status_code == 200 and "churn validation" in page.text
        # (a client folds a plain "../" before sending; these reach the app as written)
        for escape in ("/ctcd/data-docs/..%2F..%2F..%2Fservers%2Foutside.txt",
                       "/ctcd/data-docs/local_site%2F..%2F..%2F..%2F..%2Fservers/outside.txt",
                       "/ctcd/data-docs/local_site/validations/missing.html"):
            refused = client.get(escape)
            assert refused.status_code == 404, (escape, refused.text)
            assert "no Data Docs page" in refused.text  # the app refused it, not a fallback
    with pytest.MonkeyPatch.context() as patch:  # the link the lineage step shows
        patch.setenv("CTCD_HOME", str(ui.api.ctcd_home))
        assert data_docs_link("/ctcd", str(site / "page.html")) == path
        assert data_docs_link("/ctcd", "/elsewhere/x.html") == "file:///elsewhere/x.html"
