"""``ctcd models ...``: list, inspect and manage model servers from a shell.

Filters are those of ``find_model_server``; output is a table, or JSON with ``--json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ctcd.deployers.base import DEFAULT_TIMEOUT, ModelDeployer
from ctcd.deployers.registry import get_deployer, resolve_service
from ctcd.errors import CtcdError
from ctcd.services.handle import ServiceHandle, ServiceStatus

app = typer.Typer(help="Model servers: list, describe, start, stop, delete, logs.",
                  no_args_is_help=True)
# Piped output (scripts, tests) gets full-width rows instead of truncated cells.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)
F = TypeVar("F", bound=Callable[..., Any])

Service = Annotated[str, typer.Argument(help="Service id, unique id prefix, or server name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait.")]
Force = Annotated[bool, typer.Option(help="Kill the server if it does not stop in time.")]
Backend = Annotated[str | None, typer.Option(
    "--deployer", envvar="CTCD_DEPLOYER", help="Backend: local or package.module:Class.")]


def _deployer(name: str | None) -> ModelDeployer:
    return get_deployer(name)


def _status(deployer: ModelDeployer, handle: ServiceHandle) -> ServiceStatus:
    observe = getattr(deployer, "status", None)
    return observe(handle.service_id) if observe else handle.status()


def _fail(error: CtcdError) -> typer.Exit:
    err.print(f"[red]error:[/red] {error.message}", highlight=False)
    return typer.Exit(code=1)


@app.command("list")
def list_(
    running: Annotated[bool, typer.Option(help="Only servers answering now.")] = False,
    service_id: Annotated[str | None, typer.Option()] = None,
    model_name: Annotated[str | None, typer.Option()] = None,
    model_version: Annotated[str | None, typer.Option()] = None,
    model_uri: Annotated[str | None, typer.Option()] = None,
    dag_id: Annotated[str | None, typer.Option()] = None,
    run_id: Annotated[str | None, typer.Option()] = None,
    task_id: Annotated[str | None, typer.Option()] = None,
    as_json: AsJson = False,
    deployer: Backend = None,
) -> None:
    """List model servers (status is checked now, not read from storage)."""
    try:
        backend = _deployer(deployer)
        handles = backend.find_model_server(
            running=running, service_id=service_id, model_name=model_name,
            model_version=model_version, model_uri=model_uri, dag_id=dag_id, run_id=run_id,
            task_id=task_id,
        )
        rows = [(h, _status(backend, h)) for h in handles]
    except CtcdError as error:
        raise _fail(error) from error
    if as_json:
        out.print_json(json.dumps([{**h.serialize(), "status": s.value} for h, s in rows]))
        return
    table = Table("ID", "SERVER", "MODEL", "VERSION", "STATUS", "ENDPOINT", "STRATEGY",
                  "DEPLOYED", box=None)
    for h, s in rows:
        color = "green" if s is ServiceStatus.RUNNING else "red"
        table.add_row(h.service_id[:8], h.server_name, h.model_name, h.model_version,
                      f"[{color}]{s.value}[/{color}]", h.endpoint, h.strategy or "-",
                      (h.deployed_at or "-")[:19])
    out.print(table if rows else "no model servers")


@app.command()
def describe(service: Service, as_json: AsJson = False, deployer: Backend = None) -> None:
    """Everything known about one server: identity, lineage, status, versions, history."""
    try:
        backend = _deployer(deployer)
        service_id = resolve_service(backend, service)
        handle = backend.find_model_server(service_id=service_id)[0]
        info: dict[str, Any] = {**handle.serialize(), "status": _status(backend, handle).value}
        info.update(_local_details(backend, service_id, running=info["status"] == "running"))
    except CtcdError as error:
        raise _fail(error) from error
    if as_json:
        out.print_json(json.dumps(info, default=str))
        return
    table = Table(box=None, show_header=False)
    for key, value in info.items():
        if key not in ("versions", "history"):
            table.add_row(f"[bold]{key}[/bold]", str(value))
    out.print(table)
    if info.get("versions"):
        versions = Table("VERSION", "WEIGHT", "STATE", "REQUESTS", "ERRORS", "P99 MS",
                         "MODEL URI", title="loaded versions", box=None)
        for v in info["versions"]:
            versions.add_row(v["version"], f"{v['weight']:.2f}", v["state"], str(v["requests"]),
                             str(v["errors"]), str(v["latency_ms_p99"]), v["model_uri"])
        out.print(versions)
    if info.get("history"):
        history = Table("WHEN", "VERSION", "STRATEGY", "OUTCOME", "MESSAGE",
                        title="deployments", box=None)
        for d in info["history"]:
            history.add_row(d["finished_at"][:19], d["version"], d["strategy"], d["outcome"],
                            (d["message"] or "")[:80])
        out.print(history)


def _local_details(backend: ModelDeployer, service_id: str, *, running: bool) -> dict[str, Any]:
    record = getattr(backend, "record", None)
    if record is None:
        return {}
    rec = record(service_id)
    details: dict[str, Any] = {
        "desired_state": rec.desired_state, "pid": rec.pid, "port": rec.port,
        "last_error": rec.last_error,
        "history": [
            {"finished_at": d.finished_at, "version": d.config.model_version,
             "strategy": d.strategy, "outcome": d.outcome, "message": d.message,
             "seconds_to_serving": d.seconds_to_serving}
            for d in backend.history(service_id)  # type: ignore[attr-defined]
        ],
    }
    if running:
        with backend.admin(service_id) as admin:  # type: ignore[attr-defined]
            details["versions"] = [asdict(v) for v in admin.versions().values()]
    return details


@app.command("get-url")
def get_url(service: Service, deployer: Backend = None) -> None:
    """Print the server's endpoint (base URL of /invocations and /v2/...)."""
    try:
        backend = _deployer(deployer)
        handle = backend.find_model_server(service_id=resolve_service(backend, service))[0]
    except CtcdError as error:
        raise _fail(error) from error
    out.print(handle.endpoint, highlight=False)


@app.command()
def start(service: Service, timeout: Timeout = DEFAULT_TIMEOUT, deployer: Backend = None) -> None:
    """Start a stopped or crashed server (same id, port and version)."""
    try:
        backend = _deployer(deployer)
        handle = backend.start_model_server(resolve_service(backend, service), timeout=timeout)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(f"{handle.server_name} version {handle.model_version} running at "
              f"{handle.endpoint}", highlight=False)


@app.command()
def stop(service: Service, timeout: Timeout = 60.0, force: Force = False,
         deployer: Backend = None) -> None:
    """Stop a server (it keeps its id, port and version for `start`)."""
    try:
        backend = _deployer(deployer)
        backend.stop_model_server(resolve_service(backend, service), timeout=timeout, force=force)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(f"stopped {service}", highlight=False)


@app.command()
def delete(service: Service, timeout: Timeout = 60.0, force: Force = False,
           deployer: Backend = None) -> None:
    """Stop a server and forget it (its port is freed)."""
    try:
        backend = _deployer(deployer)
        backend.delete_model_server(resolve_service(backend, service), timeout=timeout,
                                    force=force)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(f"deleted {service}", highlight=False)


@app.command()
def rollback(service: Service, strategy: Annotated[str, typer.Option()] = "blue_green",
             timeout: Timeout = DEFAULT_TIMEOUT, deployer: Backend = None) -> None:
    """Deploy the version that served before the current one."""
    try:
        backend = _deployer(deployer)
        do = getattr(backend, "rollback_model_server", None)
        if do is None:
            err.print(f"[red]error:[/red] deployer {backend.name!r} cannot roll back")
            raise typer.Exit(code=1)
        handle = do(resolve_service(backend, service), strategy=strategy, timeout=timeout)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(f"{handle.server_name} serves version {handle.model_version} again",
              highlight=False)


@app.command()
def logs(
    service: Service,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow new lines.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n", help="Only the last N lines.")] = None,
    deployer: Backend = None,
) -> None:
    """Print a server's log."""
    try:
        backend = _deployer(deployer)
        for line in backend.get_logs(resolve_service(backend, service), follow=follow, tail=tail):
            print(line, flush=True)
    except CtcdError as error:
        raise _fail(error) from error
