"""The deployment trigger: deploy only a candidate whose holdout metric passes its threshold
and beats the champion's, on the same rows, by the required improvement.

A pure judge over the evaluation's numbers. MLflow's ``MetricThreshold`` states the same
rules, but cannot say "at least as good as the champion" (its ``min_absolute_change`` must
be positive), which is this project's default; so the rules are stated here, with the
metric's direction from ``ctcd.models.tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctcd.models.tasks import Metric
from ctcd.training.evaluate import Comparison


@dataclass(frozen=True)
class Decision:
    deploy: bool
    reason: str


def decide(
    comparison: Comparison, *, metric: Metric, threshold: float | None,
    min_improvement: float = 0.0,
) -> Decision:
    name = metric.name
    value = comparison.candidate.get(name)
    if value is None:
        return Decision(False, f"the candidate has no {name} on the holdout (it needs "
                        "probabilities: does the model have predict_proba?); not deploying")
    bound = "at least" if metric.greater_is_better else "at most"
    if threshold is not None and not metric.at_least(value, threshold):
        return Decision(False, f"candidate {name}={value:.4f} does not pass the threshold "
                        f"({bound} {threshold})")
    passes = f"passes the threshold ({bound} {threshold})" if threshold is not None else (
        "(no threshold)")
    if comparison.champion is None or comparison.champion.get(name) is None:
        return Decision(True, f"candidate {name}={value:.4f} {passes}; no champion yet")
    best = comparison.champion[name]
    wanted = best + min_improvement if metric.greater_is_better else best - min_improvement
    if not metric.at_least(value, wanted):
        by = f" by {min_improvement}" if min_improvement else ""
        return Decision(
            False,
            f"candidate {name}={value:.4f} does not beat champion v{comparison.champion_version} "
            f"({best:.4f}){by} on the same holdout rows",
        )
    return Decision(
        True,
        f"candidate {name}={value:.4f} {passes} and beats champion "
        f"v{comparison.champion_version} ({best:.4f}) on the same holdout rows",
    )
