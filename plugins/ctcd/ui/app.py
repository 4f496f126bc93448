"""The plugin's FastAPI app, mounted by Airflow's API server at ``/ctcd``: the deployments
page, a page per deployment, the ``Deployment`` tab of training DAG runs, and the actions.

Airflow does not authenticate a plugin's app by itself, so every route depends on Airflow's
own security: the UI's ``_token`` cookie (a browser) or a bearer token (an API client),
read by ``airflow.api_fastapi.core_api.security`` (401 without one). Pages need access to
plugin views; an action also needs edit rights (``PUT``) on the DAG that owns the model, is
accepted only as JSON (a cross-site form cannot post it) and is recorded with who did it.
"""

from __future__ import annotations

import logging
import time
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_view
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from ctcd.errors import CtcdError, ModelServerNotFound
from ctcd.ui import actions, deployments, views

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
PREFIX = "/ctcd"


def create_app() -> FastAPI:
    app = FastAPI(title="ctcd deployments", docs_url=None, redoc_url=None,
                  openapi_url=None,
                  dependencies=[Depends(requires_access_view(AccessView.PLUGINS))])
    pages = Jinja2Templates(directory=str(TEMPLATES))
    pages.env.filters["percent"] = views.percent
    pages.env.filters["ms"] = views.milliseconds
    pages.env.filters["num"] = views.number
    pages.env.filters["when"] = views.when

    @app.get("/deployments", response_class=HTMLResponse)
    def deployment_list(request: Request, user: GetUserDep) -> HTMLResponse:
        started = time.perf_counter()
        deployer = views.deployer()
        found, problems = deployments.rows(deployer, views.mlflow_reader(), budget=0.6)
        approvals = views.pending_approvals()
        context = {**views.base(request), "rows": found, "problems": problems,
                   "approvals": approvals,
                   "can_act": {r.id: _can_edit(user, views.owner_dag(r)) for r in found},
                   "paused": views.paused_dags(), "deployer": deployer.name,
                   "took": time.perf_counter() - started}
        return pages.TemplateResponse(request, "deployments.html", context)

    @app.get("/deployments/{service_id}", response_class=HTMLResponse)
    def deployment_page(service_id: str, request: Request, user: GetUserDep) -> HTMLResponse:
        deployer = views.deployer()
        handle = _handle(deployer, service_id)
        reader = views.mlflow_reader()
        row, problem = deployments.describe_one(deployer, reader, handle)
        context = {**views.base(request), "row": row, "problem": problem,
                   "can_act": _can_edit(user, views.owner_dag(row)),
                   "owner": views.owner_dag(row),
                   "lineage": views.lineage(reader, handle, request),
                   "history": views.history(row), "logs": views.logs(deployer, handle),
                   "gates": views.gates(reader, views.history(row)),
                   "approvals": [a for a in views.pending_approvals()
                                 if a["dag_id"] == views.owner_dag(row)]}
        return pages.TemplateResponse(request, "deployment.html", context)

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_tab(dag_id: str, run_id: str, request: Request) -> HTMLResponse:
        context = {**views.base(request), **views.run_summary(dag_id, run_id)}
        return pages.TemplateResponse(request, "run.html", context)

    @app.get("/data-docs/{path:path}")
    def data_docs(path: str) -> FileResponse:
        """The Great Expectations Data Docs of this home, to signed-in users: the lineage's
        validation step links here (a file:// link would not open from the UI)."""
        found = views.data_docs_file(path)
        if found is None:
            raise HTTPException(404, f"no Data Docs page {path!r}: the site is rebuilt by "
                                     "each validation; open the lineage's link again")
        return FileResponse(found)

    @app.get("/api/deployments/{service_id}/stats")
    def stats(service_id: str) -> JSONResponse:
        deployer = views.deployer()
        handle = _handle(deployer, service_id)
        row, _ = deployments.describe_one(deployer, views.mlflow_reader(), handle, budget=2.0)
        return JSONResponse({"t": time.time(), "status": row.status, "versions": {
            v.version: {"requests": v.requests, "errors": v.errors, "p50": v.p50,
                        "p99": v.p99, "weight": v.weight} for v in row.versions}})

    @app.post("/api/{kind}/{target}/{action}")
    async def act(kind: str, target: str, action: str, request: Request,
                  user: GetUserDep) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, "send the action as JSON (Content-Type: "
                                     "application/json), e.g. {}; forms are not accepted")
        try:
            body = await request.json()
        except ValueError as err:
            raise HTTPException(400, f"the body is not JSON: {err}") from err
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object, e.g. {}")
        if kind not in ("deployments", "scorers"):
            raise HTTPException(404, f"no such kind {kind!r}: deployments or scorers")
        from starlette.concurrency import run_in_threadpool

        outcome = await run_in_threadpool(_act, kind.removesuffix("s").replace("deployment",
                                                                               "server"),
                                          target, action, user)
        return JSONResponse(outcome.to_dict(), status_code=outcome.status_code)

    return app


def _act(kind: str, target: str, action: str, user: Any) -> actions.Outcome:
    """Check the user may act on the model's DAG, do it, record it."""
    deployer = views.deployer()
    if kind == "server":
        handle = _handle(deployer, target)
        name, model, owner = handle.server_name, handle.model_name, views.owner_of(handle)
    else:
        info = views.scorer(deployer, target)
        name, model, owner = info.name, info.config.model_uri, actions.OPS_DAG
    if not _can_edit(user, owner):
        raise HTTPException(403, f"you may not change {name!r}: that needs edit rights on "
                                 f"the DAG {owner!r}")
    who = user.get_name()
    try:
        message = actions.perform(deployer, kind, target if kind == "server" else name,
                                  action)
        ok, status = True, 200
    except CtcdError as err:
        message, ok, status = err.message, False, err.status_code
    log.info("%s asked to %s %s %s: %s", who, action, kind, name, message)
    run_id = actions.record(action, kind, target, name, model, who,
                            "succeeded" if ok else "failed", message)
    return actions.Outcome(action, name, ok, message, run_id, status)


def _handle(deployer: Any, service_id: str) -> Any:
    found = deployer.find_model_server(service_id=service_id)
    if not found:
        raise HTTPException(404, ModelServerNotFound(f"service id {service_id!r}").message)
    return found[0]


def _can_edit(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager

    return bool(get_auth_manager().is_authorized_dag(
        method="PUT", details=DagDetails(id=dag_id), user=user))


@cache
def app() -> FastAPI:
    return create_app()


def quoted(value: str) -> str:
    return quote(value, safe="")
