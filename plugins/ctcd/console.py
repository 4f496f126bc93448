"""The consoles the ``ctcd`` commands print to, and how they report a :class:`CtcdError`."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from ctcd.errors import CtcdError

# Piped output (scripts, tests) gets full-width rows instead of truncated cells.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)


def fail(error: CtcdError) -> typer.Exit:
    """Print ``error``'s message on stderr; the exit (code 1) for the caller to raise."""
    err.print(f"[red]error:[/red] {error.message}", highlight=False)
    return typer.Exit(code=1)
