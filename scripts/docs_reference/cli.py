"""The command line, as each program's own ``--help`` prints it: the console scripts of
pyproject.toml and every ``python -m`` package of the library (a ``__main__.py``), with their
subcommands (click's "Commands:" list, argparse's subparser choices), run in this process."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import runpy
import sys
import tomllib
from collections.abc import Callable, Iterator

from scripts.docs_reference.render import ROOT, header

_CLICK_COMMANDS = re.compile(r"^Commands:\n((?:  \S.*\n?|\s{4,}.*\n?)+)", re.M)
_ARGPARSE_CHOICES = re.compile(r"^(?:positional arguments|commands):\n\s+\{([\w,-]+)\}", re.M)


def programs() -> list[tuple[str, Callable[[], object]]]:
    """(how the user types it, a callable that runs it with ``sys.argv``)."""
    found: list[tuple[str, Callable[[], object]]] = []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name, target in sorted(project.get("scripts", {}).items()):
        module, _, attr = target.partition(":")
        found.append((name, getattr(importlib.import_module(module), attr)))
    for main in sorted((ROOT / "plugins").rglob("__main__.py")):
        module = ".".join(main.parent.relative_to(ROOT / "plugins").parts)

        def run(module: str = module) -> object:
            return runpy.run_module(module, run_name="__main__", alter_sys=False)

        found.append((f"python -m {module}", run))
    return found


def help_text(prog: str, run: Callable[[], object], args: list[str]) -> str:
    out = io.StringIO()
    argv, main = sys.argv, sys.modules["__main__"]
    package = getattr(main, "__package__", None)
    # click names the program after sys.argv[0] unless __main__ is a package's (as this
    # generator is, run with -m)
    sys.argv, main.__package__ = [prog, *args, "--help"], None
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            run()
    finally:
        sys.argv, main.__package__ = argv, package
    text = out.getvalue().rstrip()
    if not text:
        raise SystemExit(f"`{prog} {' '.join(args)} --help` printed nothing")
    return text


def subcommands(text: str) -> list[str]:
    click = _CLICK_COMMANDS.search(text + "\n")
    if click:
        return [line.split()[0] for line in click.group(1).splitlines()
                if line.startswith("  ") and not line.startswith("    ")]
    argparse_choices = _ARGPARSE_CHOICES.search(text)
    return argparse_choices.group(1).split(",") if argparse_choices else []


def _walk(prog: str, run: Callable[[], object], args: list[str],
          level: int) -> Iterator[str]:
    text = help_text(prog, run, args)
    yield f"\n{'#' * level} `{' '.join([prog, *args])}`\n\n```text\n{text}\n```\n"
    for name in subcommands(text):
        yield from _walk(prog, run, [*args, name], min(level + 1, 4))


def page() -> str:
    text = header("each program's --help (pyproject.toml scripts, plugins/**/__main__.py)")
    for prog, run in programs():
        text += "".join(_walk(prog, run, [], 2))
    return text
