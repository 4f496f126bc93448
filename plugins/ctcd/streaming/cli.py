"""``ctcd streaming ...``: run streaming scorers the way ``ctcd models`` runs model servers
(the ``local`` backend's detached processes, registry and logs)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ctcd.deployers.base import DEFAULT_TIMEOUT
from ctcd.deployers.local.scorers import LocalScorers, ScorerConfig, ScorerInfo, options_from
from ctcd.errors import CtcdError

app = typer.Typer(help="Streaming scorers: start, list, stop, restart, reload, logs.",
                  no_args_is_help=True)
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)

Name = Annotated[str, typer.Argument(help="Scorer name (or id).")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait.")]


def _fail(error: CtcdError) -> typer.Exit:
    err.print(f"[red]error:[/red] {error.message}", highlight=False)
    return typer.Exit(code=1)


def _summary(info: ScorerInfo) -> str:
    c = info.record.config
    return (f"{info.record.name}: {info.state}, {c.replicas} replica(s) of {c.model_uri} on "
            f"{c.stream} (group {c.group}) -> {c.stream}:predictions")


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
) -> None:
    """Start a scorer. With --model-uri and --stream: create it, or restart it with the new
    settings; without: start it again as last deployed."""
    scorers = LocalScorers()
    try:
        if model_uri or stream:
            if not (model_uri and stream):
                raise typer.BadParameter("give both --model-uri and --stream (or neither, to "
                                         "start an existing scorer)")
            config = ScorerConfig(
                name=name, model_uri=model_uri, stream=stream, group=group, replicas=replicas,
                redis_url=redis_url or "redis://127.0.0.1:6379/0",
                options=options_from({"batch_size": batch_size, "min_idle_ms": min_idle_ms,
                                      "max_deliveries": max_deliveries,
                                      "reload_interval": reload_interval, "dataset": dataset}))
            info = scorers.deploy(config, timeout=timeout)
        else:
            info = scorers.start(name, timeout=timeout)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(_summary(info), highlight=False)


@app.command("list")
def list_(
    running: Annotated[bool, typer.Option(help="Only scorers running now.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List scorers with their state, observed now (process + heartbeat in Redis)."""
    found = LocalScorers().find(running=running)
    if as_json:
        out.print_json(json.dumps([i.to_dict() for i in found]))
        return
    table = Table("NAME", "STATE", "MODEL", "VERSION", "STREAM", "GROUP", "REPLICAS", "SCORED",
                  "DEAD", box=None)
    for info in found:
        beats = [r.heartbeat for r in info.replicas if r.heartbeat]
        versions = sorted({str(b.get("model_version")) for b in beats}) or ["-"]
        c = info.record.config
        table.add_row(info.record.name, info.state, c.model_uri, ",".join(versions), c.stream,
                      c.group, f"{sum(r.state == 'running' for r in info.replicas)}/{c.replicas}",
                      str(sum(int(b.get("scored", 0)) for b in beats)),
                      str(sum(int(b.get("dead_lettered", 0)) for b in beats)))
    out.print(table if found else "no streaming scorers")


@app.command()
def stop(name: Name, timeout: Timeout = 60.0,
         force: Annotated[bool, typer.Option(help="Kill what has not stopped in time.")] = False
         ) -> None:
    """Stop a scorer (each replica finishes its batch; unread requests wait in the stream)."""
    try:
        LocalScorers().stop(name, timeout=timeout, force=force)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(f"stopped {name}", highlight=False)


@app.command()
def restart(name: Name, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
    """Stop and start again (replicas finish the entries they held first)."""
    try:
        info = LocalScorers().restart(name, timeout=timeout)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(_summary(info), highlight=False)


@app.command()
def reload(name: Name) -> None:
    """Make every replica check the model alias now (SIGHUP); a new version is loaded in the
    background and swapped in between batches."""
    try:
        sent = LocalScorers().reload(name)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(f"asked {sent} replica(s) of {name} to check their model", highlight=False)


@app.command()
def delete(name: Name, timeout: Timeout = 60.0,
           force: Annotated[bool, typer.Option()] = False) -> None:
    """Stop a scorer and forget it (its streams and consumer group stay in Redis)."""
    try:
        LocalScorers().delete(name, timeout=timeout, force=force)
    except CtcdError as error:
        raise _fail(error) from error
    out.print(f"deleted {name}", highlight=False)


@app.command()
def logs(
    name: Name,
    replica: Annotated[int, typer.Option(help="Which replica's log.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n")] = None,
) -> None:
    """Print a replica's log."""
    try:
        for line in LocalScorers().logs(name, replica=replica, follow=follow, tail=tail):
            print(line, flush=True)
    except CtcdError as error:
        raise _fail(error) from error
