"""The validate task's Data Docs extra link opens the page through the deployments view's
app (signed-in users), not as a file:// URL a web page cannot follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctcd.operators.validation import DATA_DOCS_KEY, DataDocsLink
from ctcd.validation.docs_site import data_docs_root


class _Task:
    """What Airflow hands a link on the worker: the finished task's XCom reader."""

    task_id = "validate"

    def __init__(self, page: str | None) -> None:
        self.page = page

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        assert (task_ids, key) == ("validate", DATA_DOCS_KEY)
        return self.page


def test_the_link_goes_through_the_app_under_the_api_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTCD_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080/")
    page = data_docs_root(tmp_path) / "local_site" / "validations" / "page.html"
    link = DataDocsLink()
    assert (link.get_link(None, ti_key=_Task(str(page)))
            == "http://airflow.example:8080/ctcd/data-docs/local_site/validations/page.html")
    assert link.get_link(None, ti_key=_Task("/elsewhere/p.html")) == "file:///elsewhere/p.html"
    assert link.get_link(None, ti_key=_Task(None)) == ""
