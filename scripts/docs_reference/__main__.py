"""python -m scripts.docs_reference [--check] [--out DIR]"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "reference" / "generated"


def _clean_environment(airflow_home: str) -> None:
    """The pages must not depend on who runs this: no project, MLflow or Airflow variables,
    a throwaway AIRFLOW_HOME, a fixed terminal width, plain (not rich) help. Set before
    anything that reads them is imported."""
    for name in list(os.environ):
        if name.startswith(("CTCD_", "MLFLOW_", "AIRFLOW", "_TYPER")):
            del os.environ[name]
    os.environ.update({"AIRFLOW_HOME": airflow_home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                       "COLUMNS": "80", "LINES": "50", "TYPER_USE_RICH": "0",
                       "NO_COLOR": "1", "TERM": "dumb"})
    sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]


def generate() -> dict[str, str]:
    """File name (under docs/reference/generated/) -> content."""
    from scripts.docs_reference import cli, dags, formats, server_api, settings

    doc = server_api.document()
    return {
        "dag-params.md": dags.page(),
        "cli.md": cli.page(),
        "settings.md": settings.page(),
        "server-api.md": server_api.page(doc),
        "openapi.json": json.dumps(doc, indent=2, sort_keys=False) + "\n",
        "formats.md": formats.page(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.docs_reference",
                                     description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each page that differs")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the pages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctcd-docs-airflow-") as airflow_home:
        _clean_environment(airflow_home)
        pages = generate()
    out: Path = args.out
    stale = []
    for name, text in pages.items():
        path = out / name
        old = path.read_text() if path.exists() else ""
        if old == text:
            continue
        stale.append(name)
        if args.check:
            diff = difflib.unified_diff(old.splitlines(), text.splitlines(), f"{path} (in git)",
                                        f"{path} (from the code)", lineterm="", n=1)
            print("\n".join(list(diff)[:40]), file=sys.stderr)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    extra = sorted(p.name for p in out.glob("*") if p.name not in pages) if out.exists() else []
    if args.check and (stale or extra):
        print(f"Stale generated reference pages in {out}: {', '.join(stale + extra)}. "
              "The code changed; run `make docs` and commit what it writes.", file=sys.stderr)
        return 1
    for name in extra:
        (out / name).unlink()
    where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"reference pages: {len(pages)} in {where}, {len(stale)} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
