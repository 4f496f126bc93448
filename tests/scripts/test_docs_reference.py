"""The generated reference pages match the code, a stale one is named, and the site builds
with --strict (a broken link or anchor fails)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from scripts.docs_reference import cli
from scripts.docs_reference.render import cell, default_text, model_tables, schema_allowed

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "docs" / "reference" / "generated"


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scripts.docs_reference", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def test_generated_pages_match_the_code() -> None:
    result = _generate("--check")
    assert result.returncode == 0, result.stderr[-4000:]


def test_a_stale_or_unknown_page_is_named_and_rewritten(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    shutil.copytree(GENERATED, out)
    (out / "settings.md").write_text((out / "settings.md").read_text() + "| `CTCD_GONE` |\n")
    (out / "old-page.md").write_text("a page no generator writes any more\n")
    before = {p.name: p.read_text() for p in out.iterdir()}

    result = _generate("--check", "--out", str(out))
    assert result.returncode == 1
    assert "settings.md, old-page.md" in result.stderr and "make docs" in result.stderr
    assert "CTCD_GONE" in result.stderr  # the diff shows what differs
    assert {p.name: p.read_text() for p in out.iterdir()} == before  # --check writes nothing

    assert _generate("--out", str(out)).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in GENERATED.iterdir())
    assert (out / "settings.md").read_text() == (GENERATED / "settings.md").read_text()


def test_site_builds_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--quiet",
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    page = (tmp_path / "site" / "reference" / "settings" / "index.html").read_text()
    assert "CTCD_SERVER_MAX_BATCH_ROWS" in page  # the generated fragment was included
    assert (tmp_path / "site" / "reference" / "generated" / "openapi.json").exists()


def test_pages_cover_every_program_dag_and_settings_class() -> None:
    cli_page = (GENERATED / "cli.md").read_text()
    for main in (ROOT / "plugins").rglob("__main__.py"):
        module = ".".join(main.parent.relative_to(ROOT / "plugins").parts)
        assert f"## `python -m {module}`" in cli_page
    assert "### `ctcd models`" in cli_page and "#### `ctcd models list`" in cli_page
    settings_page = (GENERATED / "settings.md").read_text()
    for prefix in ("CTCD_*", "CTCD_K8S_*", "CTCD_SERVER_*", "CTCD_SCORER_*"):
        assert f"## `{prefix}`" in settings_page
    assert "`POST /invocations`" in (GENERATED / "server-api.md").read_text()


def test_subcommands_of_click_and_argparse_help() -> None:
    click_help = ("Usage: ctcd [OPTIONS] COMMAND [ARGS]...\n\nOptions:\n  --help  Show this.\n\n"
                  "Commands:\n  predict    Score a file, in...\n  models     Model servers.\n"
                  "             continued description\n")
    assert cli.subcommands(click_help) == ["predict", "models"]
    argparse_help = ("usage: prog [-h] [--profile {embedded,scale}] {demo,up} ...\n\n"
                     "positional arguments:\n  {demo,up}\n    demo   start\n\noptions:\n")
    assert cli.subcommands(argparse_help) == ["demo", "up"]
    assert cli.subcommands("usage: prog [--grpc-port {int,null}]\n\noptions:\n") == []


def test_cells_and_allowed_values() -> None:
    assert cell("a | b\n<dataset>.yaml `<kept>`") == "a \\| b &lt;dataset&gt;.yaml `<kept>`"
    assert schema_allowed({"enum": ["a", "b"]}) == "`a`, `b`"
    assert schema_allowed({"anyOf": [{"type": "integer", "minimum": 1, "maximum": 5},
                                     {"type": "null"}]}) == "`>= 1, <= 5`"
    assert default_text(ROOT / ".state") == "`.state`"  # not the checkout's absolute path
    assert default_text(None) == "unset"


class _Inner(BaseModel):
    """Inner doc."""

    size: int = Field(default=3, ge=1, description="How big.")


class _Outer(BaseModel):
    name: str = Field(description="The name.")
    items: list[_Inner] = Field(default_factory=list)


@pytest.mark.parametrize("expected", ["`name` | str | required |", "`items[].size` | int | `3` |",
                                      "### `items[]`", "Inner doc.", "`>= 1`"])
def test_model_tables_nest(expected: str) -> None:
    assert expected in model_tables(_Outer)
