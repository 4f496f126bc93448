"""Data Docs pages as links the UI can open, and only the site's files served."""

from __future__ import annotations

from pathlib import Path

from ctcd.validation.docs_site import data_docs_root, page_link, site_file


def _site(home: Path) -> Path:
    page = data_docs_root(home) / "local_site" / "validations" / "run" / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text("<h1>result</h1>")
    return page


def test_a_page_of_the_site_links_through_the_app_and_others_stay_files(tmp_path: Path) -> None:
    page = _site(tmp_path)
    assert (page_link(tmp_path, str(page), "http://airflow:8080/ctcd")
            == "http://airflow:8080/ctcd/data-docs/local_site/validations/run/page.html")
    assert page_link(tmp_path, "/srv/other/page.html", "/ctcd") == "file:///srv/other/page.html"


def test_only_files_inside_the_site_are_found(tmp_path: Path) -> None:
    page = _site(tmp_path)
    (tmp_path / "secret.txt").write_text("admin token")
    (page.parent / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert site_file(tmp_path, "local_site/validations/run/page.html") == page.resolve()
    assert site_file(tmp_path, "../../../../secret.txt") is None
    assert site_file(tmp_path, "local_site/validations/run/link.txt") is None  # leaves it
    assert site_file(tmp_path, "local_site/validations") is None  # a directory
    assert site_file(tmp_path, "local_site/missing.html") is None
