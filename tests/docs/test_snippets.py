"""Snippets of the how-to guides that need no running stack, run as written (those that
need one run in tests/stack/test_rest_api_e2e.py against the real embedded stack)."""

from __future__ import annotations

from tests.docs.snippets import block, run


def test_own_dataset_suite_commands_run_as_written() -> None:
    script = block("how-to/own-dataset.md", "ctcd data suite <name> --check")
    # `ctcd data suite <name>` rewrites the checked-in suite: only the check runs here, on the
    # demo's data set, whose suite is committed
    check = [line for line in script.splitlines() if "--check" in line]
    assert len(check) == 1
    result = run(check[0], {"<name>": "churn"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_block_names_the_page_when_a_snippet_is_gone() -> None:
    try:
        block("how-to/own-dataset.md", "a command no page has")
    except AssertionError as err:
        assert "docs/how-to/own-dataset.md: 0 bash blocks" in str(err)
    else:
        raise AssertionError("a missing snippet went unnoticed")


def test_own_model_check_command_reads_the_model_file() -> None:
    result = run(block("how-to/own-model.md", "load_model('diabetes')"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dataset='diabetes'" in result.stdout and "example_models.diabetes:train" in (
        result.stdout)
