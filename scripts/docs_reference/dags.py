"""Every DAG's Params, read from a DagBag of dags/ (so DAGs generated from model files are
listed as Airflow parses them). DAGs with exactly the same Params share one table."""

from __future__ import annotations

import json
from typing import Any

from scripts.docs_reference.render import ROOT, code, header, schema_allowed, schema_type, table


def _assets(condition: Any) -> list[str]:
    if condition is None:
        return []
    if getattr(condition, "uri", None):
        return [condition.uri]
    return [uri for part in getattr(condition, "objects", ()) for uri in _assets(part)]


def _schedule(dag: Any) -> str:
    """What starts the DAG: the Assets it waits for, and its cron expression."""
    timetable = dag.timetable
    parts = []
    assets = sorted(set(_assets(getattr(timetable, "asset_condition", None))))
    if assets:
        parts.append("updates of " + ", ".join(code(uri) for uri in assets))
    expression = getattr(getattr(timetable, "timetable", timetable), "expression", None)
    if expression:
        parts.append(f"the schedule {code(expression)}")
    elif isinstance(dag.schedule, str):
        parts.append(f"the schedule {code(dag.schedule)}")
    return " and ".join(parts) if parts else "a trigger only (no schedule)"


def _purpose(dag: Any) -> str:
    """The first paragraph of the DAG's doc_md that is not a heading."""
    paragraph: list[str] = []
    for line in (dag.doc_md or dag.description or "").splitlines():
        text = line.strip()
        if text.startswith("#"):
            continue
        if not text:
            if paragraph:
                break
            continue
        paragraph.append(text)
    return " ".join(paragraph)


def _params_rows(dag: Any) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name in dag.params:
        param = dag.params.get_param(name)
        schema = dict(param.schema)
        rows.append((code(name), schema_type(schema), code(param.value) if param.value not in
                     (None, "") else ("unset" if param.value is None else '`""`'),
                     schema_allowed(schema), str(param.description or schema.get("title", ""))))
    return rows


def page() -> str:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"dags/ does not import: {bag.import_errors}")
    groups: dict[str, list[Any]] = {}
    for dag_id in sorted(bag.dags):
        dag = bag.dags[dag_id]
        key = json.dumps(_params_rows(dag))
        groups.setdefault(key, []).append(dag)
    text = header("the Params of every DAG in dags/ (an Airflow DagBag)")
    for dags in groups.values():
        first = dags[0]
        text += "\n## " + ", ".join(f"`{dag.dag_id}`" for dag in dags) + "\n\n"
        for dag in dags:
            purpose = _purpose(dag)
            text += (f"- `{dag.dag_id}`: runs on {_schedule(dag)}; tags "
                     f"{', '.join(code(t) for t in sorted(dag.tags))}."
                     + (f" {purpose}" if purpose else "") + "\n")
        rows = _params_rows(first)
        text += "\n" + (table(("Param", "type", "default", "allowed", "description"), rows)
                        if rows else "No Params.\n")
    return text
