"""``ctcd models ...``: list, inspect and manage model servers from a shell.

Filters are those of ``find_model_server``; output is a table, or JSON with ``--json``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ctcd.compiled.cli import compile_command
from ctcd.console import fail, out
from ctcd.deployers.base import (
    DEFAULT_TIMEOUT,
    DeploymentEvent,
    ModelDeployer,
    ServerDescription,
    SupportsRollback,
)
from ctcd.deployers.lookup import config_for_version
from ctcd.deployers.registry import get_deployer, resolve_service
from ctcd.errors import CtcdError, InvalidParams
from ctcd.lineage import Lineage, MlflowReader, resolve
from ctcd.services.handle import ServiceStatus

app = typer.Typer(help="Model servers: list, describe, start, stop, delete, logs; compile "
                  "a registered version.", no_args_is_help=True)
app.command("compile")(compile_command)

Service = Annotated[str, typer.Argument(help="Service id, unique id prefix, or server name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait.")]
Force = Annotated[bool, typer.Option(help="Kill the server if it does not stop in time.")]
Backend = Annotated[str | None, typer.Option(
    "--deployer", envvar="CTCD_DEPLOYER", help="Backend: local or package.module:Class.")]


def _deployer(name: str | None) -> ModelDeployer:
    return get_deployer(name)


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
        rows = [(h, backend.status(h.service_id)) for h in handles]
    except CtcdError as error:
        raise fail(error) from error
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
    """Everything known about one server: identity, status, versions, history, and the
    serving version's lineage (MLflow run, Airflow runs, data partition, validation,
    approval)."""
    try:
        backend = _deployer(deployer)
        described = backend.describe_model_server(resolve_service(backend, service))
    except CtcdError as error:
        raise fail(error) from error
    chain = _lineage(described)
    if as_json:  # raw numbers, for scripts
        out.print_json(json.dumps({**described.to_dict(), "lineage": chain.to_dict()},
                                  default=str))
        return
    _print_description(described)
    _print_lineage(chain)


def _lineage(described: ServerDescription) -> Lineage:
    """The serving version's chain back to its data (MLflow read with a bounded timeout)."""
    import os

    from ctcd.settings import get_settings

    handle = described.handle
    uri = described.details.get("tracking_uri") or get_settings().tracking_uri()
    reader = MlflowReader(str(uri), timeout=10)
    return resolve(reader, handle.model_name, handle.model_version,
                   airflow_url=os.environ.get("AIRFLOW__API__BASE_URL", "").rstrip("/"),
                   deployed_by={"dag_id": handle.dag_id, "run_id": handle.run_id,
                                "task_id": handle.task_id})


def _print_lineage(chain: Lineage) -> None:
    table = Table("STEP", "WHAT", "WHERE", title=f"lineage of version {chain.version}", box=None)
    for step in chain.steps:
        extra = step.details.get("snapshot") or step.details.get("report") or ""
        table.add_row(step.title, step.value, step.link or extra)
    out.print(table)
    if chain.error:
        out.print(f"[yellow]lineage incomplete: {chain.error}[/yellow]")


def _print_description(described: ServerDescription) -> None:
    info = {**described.handle.serialize(), "status": described.status.value,
            "desired_state": described.desired_state, "last_error": described.last_error,
            **described.details}
    table = Table(box=None, show_header=False)
    for key, value in info.items():
        if value is not None:
            table.add_row(f"[bold]{key}[/bold]", str(value))
    out.print(table)
    if described.versions:
        versions = Table("VERSION", "TRAFFIC", "STATE", "REQUESTS", "ERRORS", "P50", "P99",
                         "RUNTIME", "MODEL URI", title="loaded versions", box=None)
        for v in described.versions:
            versions.add_row(v.version, percent(v.weight), v.state, f"{v.requests:,}",
                             f"{v.errors:,}", milliseconds(v.latency_ms_p50),
                             milliseconds(v.latency_ms_p99), v.runtime or "-", v.model_uri)
        out.print(versions)
        for v in described.versions:
            if v.compiled and v.compiled != "verified":
                out.print(f"version {v.version} answers uncompiled ({v.compiled}): "
                          f"{v.compiled_reason}")
    if described.history:
        history = Table("WHEN", "VERSION", "STRATEGY", "OUTCOME", "TO SERVING", "MESSAGE",
                        title="deployments", box=None)
        for d in described.history:
            history.add_row(d.finished_at[:19].replace("T", " "), d.config.model_version,
                            d.strategy, d.outcome, _to_serving(d), (d.message or "")[:80])
        out.print(history)


def percent(weight: float) -> str:
    """A traffic weight as a share: ``1.0`` -> ``100%``, ``0.125`` -> ``12.5%``."""
    return f"{weight * 100:.1f}".removesuffix(".0") + "%"


def milliseconds(value: float | None) -> str:
    """A latency in ms, three significant figures: ``26.5656`` -> ``26.6 ms``."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f} ms"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def _to_serving(event: DeploymentEvent) -> str:
    seconds = event.seconds_to_serving
    return "-" if seconds is None else f"{seconds:.1f} s"


@app.command("get-url")
def get_url(service: Service, deployer: Backend = None) -> None:
    """Print the server's endpoint (base URL of /invocations and /v2/...)."""
    try:
        backend = _deployer(deployer)
        handle = backend.find_model_server(service_id=resolve_service(backend, service))[0]
    except CtcdError as error:
        raise fail(error) from error
    out.print(handle.endpoint, highlight=False)


@app.command()
def start(service: Service, timeout: Timeout = DEFAULT_TIMEOUT, deployer: Backend = None) -> None:
    """Start a stopped or crashed server (same id, port and version)."""
    try:
        backend = _deployer(deployer)
        handle = backend.start_model_server(resolve_service(backend, service), timeout=timeout)
    except CtcdError as error:
        raise fail(error) from error
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
        raise fail(error) from error
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
        raise fail(error) from error
    out.print(f"deleted {service}", highlight=False)


@app.command()
def rollback(service: Service, strategy: Annotated[str, typer.Option()] = "blue_green",
             timeout: Timeout = DEFAULT_TIMEOUT, deployer: Backend = None) -> None:
    """Deploy the version that served before the current one."""
    try:
        backend = _deployer(deployer)
        if not isinstance(backend, SupportsRollback):
            raise InvalidParams(
                f"deployer {backend.name!r} keeps no deployment history, so it cannot roll "
                "back; deploy the version you want with its strategy instead"
            )
        handle = backend.rollback_model_server(
            resolve_service(backend, service), strategy=strategy, timeout=timeout
        )
    except CtcdError as error:
        raise fail(error) from error
    out.print(f"{handle.server_name} serves version {handle.model_version} again",
              highlight=False)


@app.command()
def shadow(
    service: Service,
    version: Annotated[str, typer.Argument(help="Registered version of the server's model.")],
    mirror_percent: Annotated[float, typer.Option(help="Share of live requests copied.")] = 100.0,
    min_requests: Annotated[int, typer.Option(help="Mirrored requests to judge on.")] = 100,
    max_seconds: Annotated[float, typer.Option(help="Longest the shadow runs.")] = 300.0,
    option: Annotated[list[str] | None, typer.Option(
        help="Another shadow option, name=value (e.g. min_agreement=0.95).")] = None,
    timeout: Timeout = DEFAULT_TIMEOUT, deployer: Backend = None,
) -> None:
    """Try a registered version as a shadow of the serving one: it answers no client while
    its answers are compared; then it is promoted, or dropped (exit code 1, with why)."""
    strategy: dict[str, object] = {"name": "shadow", "mirror_percent": mirror_percent,
                                   "min_requests": min_requests, "max_seconds": max_seconds}
    for item in option or ():
        name, sep, value = item.partition("=")
        if not sep:
            raise fail(InvalidParams(f"--option {item!r}: write name=value"))
        try:
            strategy[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise fail(InvalidParams(f"--option {item!r}: the value must be a number, true, "
                                     "false or null")) from None
    try:
        backend = _deployer(deployer)
        config = config_for_version(backend, resolve_service(backend, service), version)
        handle = backend.deploy_model(config, strategy=strategy, timeout=timeout)
    except CtcdError as error:
        raise fail(error) from error
    out.print(f"{handle.server_name}: shadow of version {version} promoted, it serves all "
              "traffic", highlight=False)


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
        raise fail(error) from error
