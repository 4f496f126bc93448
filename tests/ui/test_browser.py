"""The deployments view in a real browser: Debian's chromium driven by Playwright, against
Airflow's own API server with the plugin loaded and real model servers behind it (the
local deployer, in the API server's CTCD_HOME). A person logs in through the UI's login
form, opens the view from the navigation, sees the row, opens the deployment's page and
rolls back a canary in progress; a read-only user sees no action and is refused by the
action endpoints; a browser that has not logged in gets 401 from the app.

Screenshots of each step are saved under the test's output directory (``tmp_path``).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FrameLocator,
    Locator,
    Page,
    expect,
    sync_playwright,
)
from tests.api_server import API_USERS, ApiServer

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.errors import RolledBack
from ctcd.services import ServiceHandle
from ctcd.settings import Settings

pytestmark = pytest.mark.e2e
MODEL = "churn-browser"
PORTS = (9780, 9789)
# a canary that stays at its first step while the test looks at it
CANARY = {"name": "canary", "steps": [0.2, 0.5], "interval_seconds": 300,
          "max_error_rate": 0.0}
WAIT_MS = 30_000


@dataclass
class Canary:
    """A live server with a canary deploy in progress (on a thread, as a deploy task runs
    it), and the versions involved."""

    url: str
    deployer: LocalDeployer
    serving: ServiceHandle
    stable: str
    candidate: str
    deploying: Future[ServiceHandle]

    def weights(self) -> dict[str, float]:
        described = self.deployer.describe_model_server(self.serving.service_id)
        return {v.version: v.weight for v in described.versions}


@pytest.fixture(scope="module")
def canary(api_server: ApiServer, model_factory: Any, ops_dag: None) -> Iterator[Canary]:
    deployer = LocalDeployer(Settings(home=api_server.ctcd_home, server_port_range=PORTS))
    stable = model_factory(name=MODEL, kind="logistic_regression")
    new = model_factory(name=MODEL, kind="logistic_regression")
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="canary-deploy")
    deploying: Future[ServiceHandle] | None = None
    try:
        serving = deployer.deploy_model(DeploymentConfig(
            model_name=MODEL, model_uri=stable.uri, model_version=stable.version,
            mlflow_run_id=stable.run_id, dag_id="churn_training",
            run_id=f"manual__v{stable.version}", task_id="deploy"), "replace", timeout=180)
        deploying = pool.submit(deployer.deploy_model, DeploymentConfig(
            model_name=MODEL, model_uri=new.uri, model_version=new.version,
            mlflow_run_id=new.run_id, dag_id="churn_training",
            run_id=f"manual__v{new.version}", task_id="deploy"), CANARY, timeout=600)
        found = Canary(api_server.url, deployer, serving, stable.version, new.version,
                       deploying)
        deadline = time.monotonic() + 120
        while found.weights().get(new.version) != pytest.approx(0.2):
            assert not deploying.done(), deploying.exception()
            assert time.monotonic() < deadline, "the canary never reached 20%"
            time.sleep(0.2)
        yield found
    finally:
        if deploying is not None and not deploying.done():  # a test failed before its rollback
            deployer.rollback_model_server(serving.service_id, timeout=60)
            deploying.exception(timeout=60)
        for handle in deployer.find_model_server(model_name=MODEL):
            deployer.delete_model_server(handle.service_id, timeout=30, force=True)
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium (never a browser Playwright downloads)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: scripts/system-packages.sh ensure test")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1400, "height": 900})
    opened.set_default_timeout(WAIT_MS)
    yield opened
    opened.close()


class Shots:
    """Numbered screenshots of the page, in the test's output directory."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page, self.folder, self.taken = page, folder, 0

    def __call__(self, name: str) -> Path:
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path


def _log_in(context: BrowserContext, url: str, user: str) -> Page:
    """Through the UI's own login form (the simple auth manager's page), as a person."""
    page = context.new_page()
    page.goto(url)
    expect(page.get_by_text("Sign into Airflow")).to_be_visible()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(API_USERS[user])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign in")).to_have_count(0)
    assert any(c["name"] == "_token" for c in context.cookies()), context.cookies()
    return page


def _open_from_navigation(page: Page) -> FrameLocator:
    """The plugin's entry in the navigation (its ``external_views``, category browse)."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Deployments").click()
    # the UI keeps the frame's own path in its URL (a deep link to what the frame shows)
    expect(page).to_have_url(re.compile(r"/plugin/deployments/ctcd/deployments$"))
    view = page.frame_locator('iframe[title="Deployments"]')
    expect(view.get_by_role("heading", name="Model deployments")).to_be_visible()
    return view


def _server_row_as(context: BrowserContext, canary: Canary, user: str
                   ) -> tuple[Page, FrameLocator, Locator]:
    """Logged in as ``user``, the view opened from the navigation, and the server's row."""
    page = _log_in(context, canary.url, user)
    view = _open_from_navigation(page)
    return page, view, view.locator(f'tr[data-id="{canary.serving.service_id}"]')


def test_a_canary_is_seen_opened_and_rolled_back_from_the_view(
    canary: Canary, context: BrowserContext, tmp_path: Path
) -> None:
    page, view, row = _server_row_as(context, canary, "admin")
    shot = Shots(page, tmp_path)
    expect(row).to_have_attribute("data-status", "running")
    expect(row).to_contain_text(f"{MODEL} v{canary.stable}")
    expect(row).to_contain_text(f"canary: version {canary.candidate} at 20% beside version "
                                f"{canary.stable}")
    expect(row).to_contain_text(f"v{canary.stable} 80.0%, v{canary.candidate} 20.0%")
    shot("list-with-canary")

    row.get_by_role("link", name=canary.serving.server_name).click()
    versions = view.locator("#versions")
    expect(view.get_by_role("heading", name=canary.serving.server_name)).to_be_visible()
    expect(versions).to_contain_text(f"v{canary.candidate}")
    expect(versions.locator("tr", has_text=f"v{canary.candidate}")).to_contain_text("20.0%")
    expect(view.locator("#lineage")).to_contain_text(f"{MODEL} v{canary.stable}")
    shot("deployment-page")

    view.get_by_role("link", name="All deployments").click()
    row.get_by_role("button", name="Roll back").click()
    question = view.get_by_role("dialog")  # in the page: the UI's frame allows no confirm()
    expect(question).to_contain_text(f"rollback {canary.serving.server_name}?")
    shot("asks-before-rollback")
    question.get_by_role("button", name="Confirm").click()
    result = view.locator("#result")
    expect(result).to_have_class(re.compile(r"\bok\b"), timeout=90_000)
    expect(result).to_contain_text(f"rolled back: version {canary.stable} serves all traffic")
    expect(result).to_contain_text("recorded as model_server_ops run")
    shot("rolled-back")
    # the page reloads itself: the row now says the stable version takes all traffic
    expect(row).to_contain_text(f"stable: version {canary.stable} takes all traffic")
    expect(row).to_contain_text(f"v{canary.stable} 100%")
    expect(row).not_to_contain_text(f"v{canary.candidate}")
    shot("list-after-rollback")

    assert canary.weights() == {canary.stable: 1.0}
    error = canary.deploying.exception(timeout=60)
    assert isinstance(error, RolledBack) and "rolled back by hand" in error.message, error
    assert sorted(tmp_path.glob("*.png")) and all(p.stat().st_size > 10_000
                                                  for p in tmp_path.glob("*.png"))


def test_a_read_only_user_sees_no_actions_and_the_endpoints_refuse_it(
    canary: Canary, context: BrowserContext, tmp_path: Path
) -> None:
    page, view, row = _server_row_as(context, canary, "viewer")
    shot = Shots(page, tmp_path)
    expect(row).to_contain_text(f"{MODEL} v")
    expect(row).to_contain_text("read-only")
    expect(view.locator("#deployments").get_by_role("button")).to_have_count(0)
    row.get_by_role("link", name=canary.serving.server_name).click()
    expect(view.get_by_text("Read-only: actions need edit rights on the DAG "
                            "churn_training")).to_be_visible()
    expect(view.get_by_role("button")).to_have_count(0)  # none shown (the dialog is closed)
    shot("read-only-page")

    # what a page script of the viewer's would get: the same cookie, the same JSON body
    frame = next(f for f in page.frames if "/ctcd/" in f.url)
    for action in ("stop", "rollback", "promote", "start"):
        answer = frame.evaluate(
            """async ([target, action]) => {
                 const r = await fetch(`/ctcd/api/deployments/${target}/${action}`,
                   {method: "POST", headers: {"Content-Type": "application/json"},
                    body: "{}", credentials: "same-origin"});
                 return [r.status, await r.text()];
               }""", [canary.serving.service_id, action])
        assert answer[0] == 403, (action, answer)
        assert "edit rights on the DAG 'churn_training'" in answer[1], answer
    assert canary.deployer.status(canary.serving.service_id).value == "running"


def test_a_browser_that_has_not_logged_in_gets_401_from_the_app(
    canary: Canary, context: BrowserContext, tmp_path: Path
) -> None:
    page = context.new_page()
    response = page.goto(f"{canary.url}/ctcd/deployments")
    assert response is not None and response.status == 401, response
    Shots(page, tmp_path)("anonymous")
    target = canary.serving.service_id
    assert page.request.get(f"{canary.url}/ctcd/deployments/{target}").status == 401
    action = page.request.post(f"{canary.url}/ctcd/api/deployments/{target}/stop", data={})
    assert action.status == 401, action.text()
    assert canary.deployer.status(target).value == "running"
