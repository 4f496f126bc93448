"""The note of a training run: the gate's decision, the answer to its approval, what serves.
(Written by the plugin's listener when the run ends; end to end in
tests/stack/test_approval_e2e.py.)"""

from __future__ import annotations

from typing import Any

from ctcd.ui.runs import NOTE_MARK, RunRecord, note

GATE = {"deploy": True, "reason": "candidate roc_auc=0.9100 passes the threshold (at least "
        "0.75) and beats champion v3 (0.8800) on the same holdout rows"}


def _record(states: dict[str, str], approval: dict[str, Any] | None = None,
            **xcoms: Any) -> RunRecord:
    values = {("deployment_trigger", "decision"): GATE, ("register", "return_value"):
              {"model_name": "churn", "version": "4"}}
    values.update({(task, "return_value"): value for task, value in xcoms.items()})
    return RunRecord("churn_training", "manual__1", "success", values, states, approval)


def test_an_approved_run_says_the_gate_who_approved_and_the_champion() -> None:
    text = note(_record({"approve": "success", "promote": "success"},
                        {"chosen": ["Approve"], "responded_by": "alice"},
                        promote={"champion": "4"}))
    assert text == (f"{NOTE_MARK} gate: deploy ({GATE['reason']}). Version 4 approved by "
                    "alice. Version 4 is the champion.")


def test_a_rejection_and_a_timeout_say_the_champion_serves() -> None:
    rejected = note(_record({"approve": "success", "promote": "skipped"},
                            {"chosen": ["Reject"], "responded_by": "bob"}))
    assert rejected is not None
    assert "Version 4 rejected by bob; it was rolled back, the champion serves." in rejected
    timed_out = note(_record({"approve": "success", "promote": "skipped"},
                             {"chosen": ["Reject"], "responded_by": None}))
    assert timed_out is not None
    assert "Version 4 rejected: no answer in time (the default answer)" in timed_out
    assert "is the champion" not in timed_out


def test_a_gate_that_says_no_is_the_whole_note() -> None:
    record = RunRecord("churn_training", "manual__2", "success",
                       {("deployment_trigger", "decision"): {
                           "deploy": False, "reason": "candidate roc_auc=0.7000 does not beat "
                           "champion v3 (0.8800) on the same holdout rows"}},
                       {"deployment_trigger": "success", "register": "skipped"})
    assert note(record) == (f"{NOTE_MARK} gate: no deploy (candidate roc_auc=0.7000 does not "
                            "beat champion v3 (0.8800) on the same holdout rows).")


def test_a_failed_step_is_named_and_a_run_without_a_gate_gets_no_note() -> None:
    failed = note(_record({"verify": "failed", "approve": "upstream_failed"}))
    assert failed is not None and failed.endswith(
        "Failed at approve, verify; the previous version serves.")
    assert note(RunRecord("other", "r", "success", {}, {"train": "success"})) is None
