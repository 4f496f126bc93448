"""The deployment trigger: deploy only a candidate that passes its threshold and beats
the champion."""

from __future__ import annotations

from dataclasses import dataclass

from ctcd.training.evaluate import Comparison


@dataclass(frozen=True)
class Decision:
    deploy: bool
    reason: str


def decide(
    comparison: Comparison, *, metric: str, threshold: float, min_improvement: float = 0.0
) -> Decision:
    value = comparison.candidate[metric]
    if value < threshold:
        return Decision(False, f"candidate {metric}={value:.4f} is below the threshold {threshold}")
    if comparison.champion is None:
        return Decision(True, f"candidate {metric}={value:.4f} passes {threshold}; no champion yet")
    best = comparison.champion[metric]
    if value < best + min_improvement:
        return Decision(
            False,
            f"candidate {metric}={value:.4f} does not beat champion v{comparison.champion_version} "
            f"({best:.4f}) by {min_improvement}",
        )
    return Decision(
        True,
        f"candidate {metric}={value:.4f} passes {threshold} and beats champion "
        f"v{comparison.champion_version} ({best:.4f})",
    )
