"""The pure judgements a rollout is made of: whether someone ended it by hand, and whether
the new version's window passes its limits (the strategies under real traffic are in
test_strategies.py)."""

from __future__ import annotations

from ctcd.deployers.admin import VersionStats
from ctcd.deployers.rollout import judge, taken_over


def _stats(version: str, weight: float, requests: int = 0, errors: int = 0,
           p99: float | None = None, state: str = "ready") -> VersionStats:
    return VersionStats(version=version, model_uri=f"models:/m/{version}", weight=weight,
                        state=state, requests=requests, errors=errors, latency_ms_p50=None,
                        latency_ms_p99=p99)


def test_taken_over_tells_promoted_rolled_back_and_still_running_apart() -> None:
    previous = {"1": 1.0}
    assert taken_over({"1": _stats("1", 1.0)}, "2", previous) == "rolled_back"
    assert taken_over({"2": _stats("2", 1.0)}, "2", previous) == "promoted"
    # all the traffic but the old version still loaded: a blue/green switch, not a promotion
    assert taken_over({"1": _stats("1", 0.0), "2": _stats("2", 1.0)}, "2", previous) is None
    assert taken_over({"1": _stats("1", 0.9), "2": _stats("2", 0.1)}, "2", previous) is None
    # a first deploy (nothing served before) taking all traffic is the strategy's own doing
    assert taken_over({"2": _stats("2", 1.0)}, "2", {}) is None


def test_judge_counts_only_the_window_and_names_the_failing_limit() -> None:
    before = {"2": _stats("2", 0.5, requests=100, errors=10)}
    limits = {"max_error_rate": 0.05, "max_latency_ms_p99": 50.0, "min_requests": 10}
    # 10 errors before the window do not count: 1 in 50 since is within 5%
    assert judge(before, {"2": _stats("2", 0.5, 150, 11, p99=20.0)}, "2", **limits) is None
    assert judge(before, {"2": _stats("2", 0.5, 150, 14, p99=20.0)}, "2", **limits) == (
        "error rate 8.0% (4/50) above the limit 5.0%")
    assert judge(before, {"2": _stats("2", 0.5, 150, 11, p99=80.0)}, "2", **limits) == (
        "p99 latency 80 ms above the limit 50 ms")
    assert judge(before, {"2": _stats("2", 0.5, 105, 10)}, "2", **limits) == (
        "only 5 requests reached it (at least 10 needed to judge)")
    assert judge(before, {}, "2", **limits) == "version 2 is missing"
    assert judge(before, {"2": _stats("2", 0.5, state="failed")}, "2", **limits) == (
        "version 2 is failed")
