"""Validate a snapshot with a Great Expectations 1.x Checkpoint, in a file-backed context.

The context lives under the state directory (``$CTCD_HOME/gx``): a pandas data source,
one data frame asset per data set with a whole-frame batch definition, the data set's
suite (the checked-in ``include/expectations/<dataset>.json``), a ``ValidationDefinition``
and a ``Checkpoint`` whose ``UpdateDataDocsAction`` renders the result into the Data Docs
site. Every result is kept as JSON under ``$CTCD_HOME/reports/<dataset>/`` next to its
Data Docs page; a failing one raises :class:`DataValidationError` listing each failed
expectation with what was observed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ctcd.data.snapshots import notes_of
from ctcd.data.spec import DatasetSpec
from ctcd.errors import DataValidationError
from ctcd.validation.docs_site import gx_root
from ctcd.validation.suite import load_suite, suite_parameters

DATASOURCE = "ctcd"
BATCH = "whole-snapshot"


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    observed: str
    why: str = ""  # the suite's reason for the expectation (its meta), when it says more

    def line(self) -> str:
        where = self.column or "table"
        why = f" [{self.why}]" if self.why else ""
        return f"{where}: {self.expectation}{why} ({self.observed})"


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    report: Path
    docs_page: Path | None
    evaluated: int
    failures: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "report": str(self.report),
            "docs_page": str(self.docs_page) if self.docs_page else None,
            "evaluated": self.evaluated,
            "failed": [f.line() for f in self.failures],
        }


def _context(root: Path) -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.variables.save()
    return context


def _checkpoint(context: Any, dataset: str) -> Any:
    """The data set's checkpoint, its pieces created or updated from the checked-in suite."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    try:
        source = context.data_sources.get(DATASOURCE)
    except KeyError:
        source = context.data_sources.add_pandas(DATASOURCE)
    try:
        asset = source.get_asset(dataset)
    except LookupError:
        asset = source.add_dataframe_asset(dataset)
    try:
        batch = asset.get_batch_definition(BATCH)
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(BATCH)
    suite = context.suites.add_or_update(gx.ExpectationSuite(**load_suite(dataset)))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=dataset, data=batch, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=dataset,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
        )
    )


def for_gx(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as ``object`` (values ``str``): GX's pandas type checks know those."""
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.StringDtype | pd.CategoricalDtype):
            frame[name] = frame[name].astype(object)
    return frame


def validate_snapshot(
    snapshot: Path,
    spec: DatasetSpec,
    *,
    partition: date,
    home: Path,
    today: date | None = None,
    run_name: str | None = None,
) -> ValidationOutcome:
    """Run the data set's checkpoint on ``snapshot``; keep the result; raise if it failed."""
    from great_expectations.core.run_identifier import RunIdentifier

    today = today or datetime.now(UTC).date()
    context = _context(gx_root(home))
    checkpoint = _checkpoint(context, spec.name)
    frame = for_gx(pd.read_parquet(snapshot))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    result = checkpoint.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=suite_parameters(spec, today),
        run_id=RunIdentifier(run_name=run_name or f"{spec.name}-{partition}-{stamp}"),
    )
    [(identifier, validation)] = result.run_results.items()
    report = home / "reports" / spec.name / f"validation-{partition}-{stamp}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(validation.to_json_dict(), indent=2, default=str))
    urls = context.get_docs_sites_urls(resource_identifier=identifier)
    page = Path(urls[0]["site_url"].removeprefix("file://")) if urls else None
    failures = _failures(validation.results)
    outcome = ValidationOutcome(
        success=bool(result.success),
        report=report,
        docs_page=page if page and page.is_file() else None,
        evaluated=len(validation.results),
        failures=failures,
    )
    if not outcome.success:
        listed = "; ".join(f.line() for f in failures)
        notes = " ".join(notes_of(snapshot))  # what ingest saw wrong with a file: first
        noted = f"{notes} Failed expectations: " if notes else ""
        raise ValidationFailed(
            f"Partition {partition} of data set {spec.name!r} failed validation "
            f"({len(failures)} of {outcome.evaluated} expectations), so nothing was trained or "
            f"deployed: {noted}{listed}. Fix the data at its source and land the partition again. "
            f"Result: {report}; Data Docs: {outcome.docs_page}.",
            outcome=outcome,
        )
    return outcome


class ValidationFailed(DataValidationError):
    """A snapshot failed its expectation suite; ``outcome`` holds the kept result."""

    def __init__(self, message: str, *, outcome: ValidationOutcome) -> None:
        super().__init__(message, report_path=str(outcome.report))
        self.outcome = outcome


def _failures(results: list[Any]) -> list[Failure]:
    missing = {
        r.expectation_config.kwargs.get("column")
        for r in results
        if not r.success and r.expectation_config.type == "expect_column_to_exist"
    }
    failures = []
    for r in results:
        if r.success:
            continue
        config = r.expectation_config
        column = config.kwargs.get("column")
        if column in missing and config.type != "expect_column_to_exist":
            continue  # one line per missing column, not one per expectation on it
        failures.append(
            Failure(
                expectation=config.type.removeprefix("expect_"),
                column=column,
                observed=_observed(config, r.result, r.exception_info),
                why=_why(config),
            )
        )
    return failures


def _why(config: Any) -> str:
    """The suite's reason where the expectation's name alone would mislead (a balance
    check is an in-set check of one class)."""
    why = str((config.meta or {}).get("why") or "")
    return why if why.startswith("label balance") else ""


def _observed(config: Any, result: dict[str, Any], exception: Any) -> str:
    if config.type == "expect_column_to_exist":
        return "column is missing"
    if result.get("observed_value") is not None:
        expected = {k: v for k, v in config.kwargs.items() if k not in ("column", "batch_id")}
        return f"observed {_plain(result['observed_value'])!r}, expected {expected}"
    if "unexpected_count" in result:
        sample = [_plain(v) for v in result.get("partial_unexpected_list") or []]
        return (
            f"{result['unexpected_count']} unexpected values "
            f"({result.get('unexpected_percent') or 0:.2f}%), e.g. {sample[:5]}"
        )
    if isinstance(exception, dict):
        messages = {
            v.get("exception_message")
            for v in exception.values()
            if isinstance(v, dict) and v.get("exception_message")
        } or {exception.get("exception_message")}
        messages.discard(None)
        if messages:
            return "could not be evaluated: " + "; ".join(sorted(map(str, messages)))
    return "failed"


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so messages read ``0.0``, not ``np.float64(0.0)``."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
