"""The evidence page a person reads before approving a version (pure: built from the
steps' results as the training DAG's XComs hold them)."""

from __future__ import annotations

from ctcd.pipelines.approval import Evidence, body, subject

REGISTERED = {"model_name": "churn", "version": "7", "run_id": "abc"}


def test_the_page_sets_candidate_against_champion_and_says_what_each_answer_does() -> None:
    evidence = Evidence(
        registered=REGISTERED, timeout_minutes=120,
        evaluation={"metric": "roc_auc", "candidate": {"roc_auc": 0.91, "f1": 0.5},
                    "champion": {"roc_auc": 0.88, "f1": 0.55}, "champion_version": "6",
                    "holdout_rows": 1200},
        decision={"deploy": True, "reason": "roc_auc 0.9100 beats champion 0.8800"},
        ingested={"dataset": "churn", "day": "2026-12-01", "source": "landing", "rows": 4000,
                  "snapshot": "/data/snap.parquet"},
        validation={"success": True, "evaluated": 31},
        deployment={"strategy": "canary", "server_name": "churn", "endpoint": "http://h:1",
                    "notes": ["canary step 20% passed: 0 errors in 57 requests, p99 12.0 ms"]},
        links={"Deployment page": "http://a/plugin/deployments/x", "MLflow run": ""},
    )
    page = body(evidence)
    assert subject(evidence) == "Promote churn version 7 to champion?"
    lines = page.splitlines()
    assert lines.index("| roc_auc (gate) | 0.9100 | 0.8800 |") < lines.index(
        "| f1 | 0.5000 | 0.5500 |")  # the gate's metric first
    assert "| metric | candidate | champion (v6) |" in page
    assert "**Gate:** roc_auc 0.9100 beats champion 0.8800." in page
    assert "Great Expectations: passed (31 expectations)" in page and "4,000 rows" in page
    assert "- canary step 20% passed: 0 errors in 57 requests, p99 12.0 ms" in page
    assert "[Deployment page](http://a/plugin/deployments/x)" in page
    assert "MLflow run" not in page  # a link MLflow could not give is left out
    assert "**Reject** rolls it back: champion version 6 serves again" in page
    assert "No answer within 2 hour(s) counts as **Reject**." in page


def test_a_first_version_has_no_champion_to_return_to() -> None:
    page = body(Evidence(registered=REGISTERED, evaluation={"candidate": {"rmse": 1.5}}))
    assert "there is no champion yet, so the model server is stopped" in page
    assert "| rmse | 1.5000 | - |" in page


def test_a_held_shadow_shows_its_comparison_and_what_each_answer_does_to_it() -> None:
    page = body(Evidence(
        registered=REGISTERED, timeout_minutes=60,
        deployment={"strategy": "shadow", "outcome": "held", "server_name": "churn",
                    "endpoint": "http://h:1",
                    "notes": ["inconclusive (only 3 mirrored requests ended (100 needed to "
                              "judge)): the shadow keeps running"]},
        shadow={"version": "7", "live_versions": ["6"], "mirror_percent": 100.0,
                "cumulative": {"mirrored": 12, "answered": 12, "errors": 0, "timeouts": 0,
                               "dropped": 0, "labels": {"agreement": 1.0},
                               "disagreeing_requests": 0}},
        verified={"shadow": "held", "rows_checked": 0}))
    assert "Version 7 **shadows** the live version on model server `churn`" in page
    assert "**inconclusive**" in page and "the decision is yours" in page
    assert "**Shadow comparison now** (version 7 against 6, 100% mirrored): mirrored 12" \
        in page
    assert "| label agreement | 1.0000 |" in page and "| mirrored requests | 12 |" in page
    assert "**Verify:** not run: a shadow answers no client" in page
    assert "**Approve** makes shadow version 7 live at once" in page
    assert "**Reject** drops the shadow" in page and "rolls it back" not in page
    assert "No answer within 1 hour(s) counts as **Reject**." in page
