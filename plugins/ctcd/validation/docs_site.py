"""The Great Expectations project of a home and its Data Docs site, and a site page as a
link a browser can follow: through the deployments view's app, which serves the site to
signed-in Airflow users (a ``file://`` link does not open from a web page)."""

from __future__ import annotations

from pathlib import Path


def gx_root(home: Path) -> Path:
    return home / "gx"


def data_docs_root(home: Path) -> Path:
    """The Data Docs sites GX builds in the home's project (``local_site`` is one)."""
    return gx_root(home) / "gx" / "uncommitted" / "data_docs"


def site_file(home: Path, path: str) -> Path | None:
    """The file at ``path`` (relative to the sites), or None when there is none or the path
    leaves them."""
    root = data_docs_root(home).resolve()
    found = (root / path).resolve()
    return found if found.is_relative_to(root) and found.is_file() else None


def page_link(home: Path, page: str, app_url: str) -> str:
    """``page`` (a file GX wrote) under ``app_url``'s ``/data-docs/`` route when it is in the
    home's sites, else a ``file://`` link."""
    try:
        relative = Path(page).resolve().relative_to(data_docs_root(home).resolve())
    except ValueError:
        return f"file://{page}"
    return f"{app_url}/data-docs/{relative.as_posix()}"
