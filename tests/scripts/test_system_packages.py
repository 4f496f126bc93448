"""scripts/system-packages.sh: the one list of system packages, as `make test` and .ci/run
use it. Run with a PATH holding only the shell tools it needs, so every package is missing
and there is no apt-get: it must stop with the exact command, before any test would start."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "system-packages.sh"


@pytest.fixture
def bare_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash
    return subprocess.run([bash, str(SCRIPT), *args], capture_output=True, text=True,
                          env={"PATH": path}, timeout=30)


def test_check_names_what_is_missing_and_the_command(bare_path: str) -> None:
    result = run(bare_path, "check", "test")
    assert result.returncode == 1
    assert "redis-server" in result.stderr and "docker-compose" in result.stderr
    # PostgreSQL is found by its files, not on PATH: it may or may not be missing here.
    assert re.search(r"apt-get install -y redis-server (postgresql )?docker-compose",
                     result.stderr)


def test_ensure_without_apt_stops_with_the_command(bare_path: str) -> None:
    result = run(bare_path, "ensure", "test-scale")
    assert result.returncode == 1
    # PostgreSQL is found by its files, not on PATH: it may or may not be missing here.
    assert "apt-get install -y redis-server" in result.stderr


def test_a_target_needing_nothing_passes(bare_path: str) -> None:
    result = run(bare_path, "check", "demo")
    assert (result.returncode, result.stderr) == (0, "")


def test_list_and_bad_usage(bare_path: str) -> None:
    listed = run(bare_path, "list", "test-scale", "bench-serving").stdout.split()
    assert listed == ["redis-server", "postgresql", "wrk"]
    assert run(bare_path, "frobnicate", "test").returncode == 2


def test_missing_prints_what_is_not_there_by_the_same_probes(bare_path: str) -> None:
    """What .ci/run prints before `make test`: found the way `ensure` looks (a package
    removed but not purged still has a dpkg record, and must count as missing)."""
    result = run(bare_path, "missing", "test")
    assert result.returncode == 0
    assert {"redis-server", "docker-compose", "openssl"} <= set(result.stdout.split())
    assert run(bare_path, "missing", "demo").stdout == ""
