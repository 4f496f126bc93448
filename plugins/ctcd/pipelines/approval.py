"""The evidence a person reads before approving a new version: one Markdown page, built from
what the training run's steps returned (no Airflow here, so it is tested directly).

The approval step (:class:`ctcd.operators.approval.ApproveDeploymentOperator`) shows it in
the UI's Required Actions and in the REST API's ``hitlDetails``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Evidence:
    """What the run found, step by step (each a step's XCom value, or empty)."""

    registered: Mapping[str, Any]
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    decision: Mapping[str, Any] = field(default_factory=dict)
    ingested: Mapping[str, Any] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)
    deployment: Mapping[str, Any] = field(default_factory=dict)
    verified: Mapping[str, Any] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)
    timeout_minutes: int | None = None
    shadow: Mapping[str, Any] = field(default_factory=dict)  # a held shadow's comparison now

    @property
    def held(self) -> bool:
        """The deploy left a shadow running for this decision (too few requests to judge)."""
        return self.deployment.get("outcome") == "held"


def subject(evidence: Evidence) -> str:
    r = evidence.registered
    return f"Promote {r['model_name']} version {r['version']} to champion?"


def body(evidence: Evidence) -> str:
    """The Markdown page: what serves now, the gate, the metrics side by side, the data and
    its validation, the deployment's analysis, the verification, links, and what each
    answer does."""
    r = evidence.registered
    parts = [_serving(evidence), _gate(evidence), _metrics(evidence.evaluation),
             _data(evidence.ingested, evidence.validation), _deployment(evidence.deployment),
             _shadow(evidence.shadow), _verified(evidence.verified), _links(evidence.links),
             _answers(evidence)]
    head = f"### {r['model_name']} version {r['version']}\n"
    return head + "\n\n".join(p for p in parts if p) + "\n"


def _serving(e: Evidence) -> str:
    d, r = e.deployment, e.registered
    if not d:
        return f"Version {r['version']} was deployed and verified; it is not champion yet."
    where = f" on model server `{d.get('server_name', '?')}`" if d.get("server_name") else ""
    if e.held:
        return (f"Version {r['version']} **shadows** the live version{where} "
                f"({d.get('endpoint', '')}): it gets a copy of the requests and answers no "
                "client. Its analysis was **inconclusive** (too few mirrored requests to "
                "judge by itself), so the decision is yours.")
    return (f"Version {r['version']} serves{where} ({d.get('strategy', '?')}, "
            f"{d.get('endpoint', '')}); the registry's champion is unchanged until you "
            "approve.")


def _gate(e: Evidence) -> str:
    reason = e.decision.get("reason")
    return f"**Gate:** {reason}." if reason else ""


def _metrics(evaluation: Mapping[str, Any]) -> str:
    candidate = evaluation.get("candidate") or {}
    if not candidate:
        return ""
    champion = evaluation.get("champion") or {}
    who = f"champion (v{evaluation.get('champion_version')})" if champion else "champion"
    rows = [f"| metric | candidate | {who} |", "|---|---|---|"]
    gate = evaluation.get("metric")
    for name in sorted(candidate, key=lambda n: (n != gate, n)):
        mark = " (gate)" if name == gate else ""
        rows.append(f"| {name}{mark} | {_number(candidate[name])} | "
                    f"{_number(champion.get(name))} |")
    held = evaluation.get("holdout_rows")
    note = f"\n\nOn the same {held:,} holdout rows." if isinstance(held, int) else ""
    return "\n".join(rows) + note


def _data(ingested: Mapping[str, Any], validation: Mapping[str, Any]) -> str:
    if not ingested:
        return ""
    days = ingested.get("days") or [ingested.get("day")]
    window = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    rows = ingested.get("rows")
    size = f", {rows:,} rows" if isinstance(rows, int) else ""
    line = (f"**Data:** {ingested.get('dataset')} partition {window} from "
            f"{ingested.get('source')}{size}; snapshot `{ingested.get('snapshot')}`.")
    if validation:
        checked = validation.get("evaluated")
        line += (f" Great Expectations: {'passed' if validation.get('success', True) else 'FAILED'}"
                 f"{f' ({checked} expectations)' if checked else ''}.")
    return line


def _deployment(deployment: Mapping[str, Any]) -> str:
    notes: Sequence[str] = deployment.get("notes") or ()
    analysis = deployment.get("analysis")
    lines = []
    if notes:
        lines.append(f"**{str(deployment.get('strategy', 'deployment')).replace('_', '/')} "
                     "analysis:**")
        lines += [f"- {note}" for note in notes]
    if isinstance(analysis, Mapping) and analysis:
        lines.append("")
        lines += ["| measure | value |", "|---|---|"]
        lines += [f"| {key} | {_number(value)} |" for key, value in analysis.items()]
    return "\n".join(lines)


def _shadow(shadow: Mapping[str, Any]) -> str:
    """The held shadow's comparison as the server has it now (it kept comparing)."""
    cumulative = shadow.get("cumulative")
    if not isinstance(cumulative, Mapping):
        return ""
    from ctcd.deployers.shadow import summarize

    labels = cumulative.get("labels") or {}
    rows = [("mirrored requests", cumulative.get("mirrored")),
            ("answered by the shadow", cumulative.get("answered")),
            ("errors", cumulative.get("errors")), ("timeouts", cumulative.get("timeouts")),
            ("dropped (queue full)", cumulative.get("dropped")),
            ("label agreement", labels.get("agreement")),
            ("disagreeing requests", cumulative.get("disagreeing_requests"))]
    table = ["| shadow comparison now | value |", "|---|---|"]
    table += [f"| {name} | {_number(value)} |" for name, value in rows if value is not None]
    return (f"**Shadow comparison now** (version {shadow.get('version')} against "
            f"{', '.join(map(str, shadow.get('live_versions') or [])) or 'the live version'}, "
            f"{_percent(shadow.get('mirror_percent'))} mirrored): {summarize(cumulative)}\n\n"
            + "\n".join(table))


def _verified(verified: Mapping[str, Any]) -> str:
    if verified.get("shadow") == "held":
        return ("**Verify:** not run: a shadow answers no client, so its answers are judged "
                "by the comparison above, on live requests.")
    if not verified:
        return ""
    return (f"**Verify:** {verified.get('rows_checked')} holdout rows answered by "
            f"{verified.get('endpoint')} like the registered model.")


def _links(links: Mapping[str, str]) -> str:
    shown = [f"[{name}]({url})" for name, url in links.items() if url]
    return "**Links:** " + " · ".join(shown) if shown else ""


def _answers(e: Evidence) -> str:
    r = e.registered
    champion = e.evaluation.get("champion_version")
    back = (f"champion version {champion} serves again" if champion
            else "there is no champion yet, so the model server is stopped")
    wait = (f" No answer within {_duration(e.timeout_minutes)} counts as **Reject**."
            if e.timeout_minutes else "")
    if e.held:
        return (f"**Approve** makes shadow version {r['version']} live at once (the live "
                "version is unloaded) and the champion. **Reject** drops the shadow: the live "
                f"version, which never stopped answering, keeps serving.{wait}")
    return (f"**Approve** makes version {r['version']} the champion (batch scoring and "
            f"streaming scorers follow it). **Reject** rolls it back: {back}.{wait}")


def _duration(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440} day(s)"
    if minutes % 60 == 0:
        return f"{minutes // 60} hour(s)"
    return f"{minutes} minute(s)"


def _percent(value: Any) -> str:
    return f"{value:g}%" if isinstance(value, int | float) else "?%"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
