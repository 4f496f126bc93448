"""The `ctcd` command line as the tests call it: in process (Typer's runner), against a
local deployer's home and port range."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctcd.cli import build

Ctcd = Callable[..., str]


def invoker(home: Path, ports: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> Ctcd:
    """``ctcd(*args, code=0)``: run the command, check its exit code, return its output."""
    monkeypatch.setenv("CTCD_HOME", str(home))
    monkeypatch.setenv("CTCD_SERVER_PORT_RANGE", json.dumps(list(ports)))
    monkeypatch.delenv("CTCD_DEPLOYER", raising=False)
    runner, app = CliRunner(), build()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result.output

    return run
