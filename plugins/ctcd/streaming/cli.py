"""``ctcd streaming ...``: run streaming scorers the way ``ctcd models`` runs model servers,
through the deployer's :class:`ctcd.deployers.scorers.SupportsScorers` capability (``local``:
detached processes; ``kubernetes``: a Deployment)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ctcd.console import fail, out
from ctcd.deployers.base import DEFAULT_TIMEOUT
from ctcd.deployers.registry import get_deployer
from ctcd.deployers.scorers import (
    DEFAULT_REDIS_URL,
    ScorerConfig,
    ScorerInfo,
    SupportsScorers,
    scorers_of,
)
from ctcd.errors import CtcdError

app = typer.Typer(help="Streaming scorers: start, list, stop, restart, reload, logs.",
                  no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="Scorer name (or id).")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait.")]
Backend = Annotated[str | None, typer.Option(
    "--deployer", envvar="CTCD_DEPLOYER", help="Backend: local, kubernetes or "
    "package.module:Class (it must support streaming scorers).")]


def _backend(name: str | None) -> SupportsScorers:
    return scorers_of(get_deployer(name))


def _summary(info: ScorerInfo) -> str:
    c = info.config
    versions = ", ".join(info.model_versions) or "-"
    return (f"{info.name}: {info.state}, {c.replicas} replica(s) of {c.model_uri} (version "
            f"{versions}) on {c.stream} (group {c.group}) -> {c.stream}:predictions")


@app.command()
def start(
    name: Name,
    model_uri: Annotated[str | None, typer.Option(
        help="models:/NAME@champion (follows the alias) or models:/NAME/VERSION.")] = None,
    stream: Annotated[str | None, typer.Option(help="Stream of requests.")] = None,
    redis_url: Annotated[str | None, typer.Option(
        envvar="CTCD_SCORER_REDIS_URL", help="Redis (a password is not recorded).")] = None,
    group: Annotated[str, typer.Option(help="Consumer group.")] = "ctcd-scorers",
    replicas: Annotated[int, typer.Option(help="Scorer processes sharing the stream.")] = 1,
    batch_size: Annotated[int | None, typer.Option()] = None,
    min_idle_ms: Annotated[int | None, typer.Option()] = None,
    max_deliveries: Annotated[int | None, typer.Option()] = None,
    reload_interval: Annotated[float | None, typer.Option()] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set spec to check requests by.")]
    = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    deployer: Backend = None,
) -> None:
    """Start a scorer. With --model-uri and --stream: create it, or restart it with the new
    settings; without: start it again as last deployed."""
    try:
        scorers = _backend(deployer)
        if model_uri or stream:
            if not (model_uri and stream):
                raise typer.BadParameter("give both --model-uri and --stream (or neither, to "
                                         "start an existing scorer)")
            config = ScorerConfig(
                name=name, model_uri=model_uri, stream=stream, group=group, replicas=replicas,
                redis_url=redis_url or DEFAULT_REDIS_URL,
                options=_options({"batch_size": batch_size, "min_idle_ms": min_idle_ms,
                                      "max_deliveries": max_deliveries,
                                      "reload_interval": reload_interval, "dataset": dataset}))
            info = scorers.deploy_scorer(config, timeout=timeout)
        else:
            info = scorers.start_scorer(name, timeout=timeout)
    except CtcdError as error:
        raise fail(error) from error
    out.print(_summary(info), highlight=False)


@app.command("list")
def list_(
    running: Annotated[bool, typer.Option(help="Only scorers running now.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    deployer: Backend = None,
) -> None:
    """List scorers with their state, observed now (process or pod, and heartbeat)."""
    try:
        found = _backend(deployer).find_scorers(running=running)
    except CtcdError as error:
        raise fail(error) from error
    if as_json:
        out.print_json(json.dumps([i.to_dict() for i in found]))
        return
    table = Table("NAME", "STATE", "MODEL", "VERSION", "STREAM", "GROUP", "REPLICAS", "SCORED",
                  "DEAD", box=None)
    for info in found:
        beats = [r.heartbeat for r in info.replicas if r.heartbeat]
        c = info.config
        table.add_row(info.name, info.state, c.model_uri, ",".join(info.model_versions) or "-",
                      c.stream, c.group,
                      f"{sum(r.state == 'running' for r in info.replicas)}/{c.replicas}",
                      str(sum(int(b.get("scored", 0)) for b in beats)),
                      str(sum(int(b.get("dead_lettered", 0)) for b in beats)))
    out.print(table if found else "no streaming scorers")


@app.command()
def describe(name: Name, deployer: Backend = None) -> None:
    """One scorer as JSON: config, state, each replica observed now."""
    try:
        info = _backend(deployer).describe_scorer(name)
    except CtcdError as error:
        raise fail(error) from error
    out.print_json(json.dumps(info.to_dict()))


@app.command()
def stop(name: Name, timeout: Timeout = 60.0,
         force: Annotated[bool, typer.Option(help="Kill what has not stopped in time.")] = False,
         deployer: Backend = None) -> None:
    """Stop a scorer (each replica finishes its batch; unread requests wait in the stream)."""
    try:
        _backend(deployer).stop_scorer(name, timeout=timeout, force=force)
    except CtcdError as error:
        raise fail(error) from error
    out.print(f"stopped {name}", highlight=False)


@app.command()
def restart(name: Name, timeout: Timeout = DEFAULT_TIMEOUT, deployer: Backend = None) -> None:
    """Replace every replica (nothing held is lost: it is finished or claimed)."""
    try:
        info = _backend(deployer).restart_scorer(name, timeout=timeout)
    except CtcdError as error:
        raise fail(error) from error
    out.print(_summary(info), highlight=False)


@app.command()
def reload(name: Name, deployer: Backend = None) -> None:
    """Make every replica check the model alias now (a new champion); a new version is
    loaded in the background and swapped in between batches."""
    try:
        sent = _backend(deployer).reload_scorer(name)
    except CtcdError as error:
        raise fail(error) from error
    out.print(f"asked {sent} replica(s) of {name} to check their model", highlight=False)


@app.command()
def delete(name: Name, timeout: Timeout = 60.0,
           force: Annotated[bool, typer.Option()] = False, deployer: Backend = None) -> None:
    """Stop a scorer and forget it (its streams and consumer group stay in Redis)."""
    try:
        _backend(deployer).delete_scorer(name, timeout=timeout, force=force)
    except CtcdError as error:
        raise fail(error) from error
    out.print(f"deleted {name}", highlight=False)


@app.command()
def logs(
    name: Name,
    replica: Annotated[int | None, typer.Option(
        help="Which replica's log (0-based); default: every replica's.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n")] = None,
    deployer: Backend = None,
) -> None:
    """Print the replicas' logs."""
    try:
        for line in _backend(deployer).get_scorer_logs(name, replica=replica, follow=follow,
                                                       tail=tail):
            print(line, flush=True)
    except CtcdError as error:
        raise fail(error) from error


def _options(values: dict[str, object]) -> dict[str, str]:
    """Options given on the command line (``None``: not given) as recorded strings."""
    return {k: str(v) for k, v in values.items() if v is not None}
