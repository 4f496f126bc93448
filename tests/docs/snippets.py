"""The documentation's code blocks, taken from the pages as a reader copies them and run
for real (importable helpers, not fixtures): a page's snippet that stops working fails a test,
and a snippet edited away fails the lookup, which says which page and what it looked for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.M | re.S)


def block(page: str, containing: str, lang: str = "bash") -> str:
    """The one ``lang`` code block of ``docs/<page>`` that contains ``containing``."""
    text = (DOCS / page).read_text()
    found = [re.sub(rf"^{m[1]}", "", m[3], flags=re.M) for m in _FENCE.finditer(text)
             if m[2] == lang and containing in m[3]]
    assert len(found) == 1, f"docs/{page}: {len(found)} {lang} blocks contain {containing!r}"
    return found[0]


def run(script: str, replace: Mapping[str, str] = {}, *, cwd: Path = ROOT,
        env: Mapping[str, str] = {}, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a bash block as the reader would, from the checkout, with this interpreter's
    virtualenv first on PATH (the pages write `.venv/bin/...` or bare `ctcd`), after
    replacing the addresses the page assumes (`make demo`'s) with the test's own."""
    for old, new in replace.items():
        assert old in script, f"the snippet no longer mentions {old!r}:\n{script}"
        script = script.replace(old, new)
    venv = Path(sys.executable).parent
    script = re.sub(r"(?<![\w/.])\.venv/bin/", f"{venv}/", script)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ['PATH']}",
                               **env})
