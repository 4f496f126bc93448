"""A landing location on disk, a real MLflow server with a serving champion, and a helper
that runs ingest + validate on whatever files a test drops there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ModelFiles
from tests.pipelines.landing import Landing, Run, Stopped

from ctcd.models import ModelDefinition
from ctcd.pipelines import continuous_training as pipeline
from ctcd.tracking import Tracking


@pytest.fixture
def landing(tmp_path: Path, ctcd_home: Path) -> Landing:
    return Landing(tmp_path / "landing" / "churn")


@pytest.fixture
def tracking(mlflow_server: str) -> Tracking:
    return Tracking(mlflow_server)


@pytest.fixture
def churn(model_files: ModelFiles) -> ModelDefinition:
    """The test's churn model file (a fast logistic regression, named after the test)."""
    return model_files.write("churn", gate={"metric": "roc_auc", "threshold": 0.75})


@pytest.fixture
def run(landing: Landing, tracking: Tracking, churn: ModelDefinition) -> Run:
    """ingest + validate from the test's landing location, as the DAG's first two tasks."""

    def go(**conf: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        ingested = pipeline.ingest(churn, {"landing_uri": landing.uri, **conf}, tracking)
        return ingested, pipeline.validate(ingested, tracking)

    return go


@pytest.fixture
def stopped(run: Run, tracking: Tracking, champion: Champion) -> Stopped:
    """Run ingest + validate, which must stop with a DataValidationError; return its message
    after checking nothing reached the registry and the champion is unchanged."""
    from ctcd.errors import DataValidationError

    def go(**conf: Any) -> str:
        with pytest.raises(DataValidationError) as caught:
            run(**conf)
        assert tracking.model_versions(champion.name) == champion.versions
        assert tracking.champion_version(champion.name) == champion.version
        return caught.value.message

    return go


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    versions: list[str]


@pytest.fixture
def champion(
    model_factory: Callable[..., Any], tracking: Tracking, churn: ModelDefinition
) -> Champion:
    """A registered version of the test's churn model, serving as its champion."""
    name = churn.model_name
    registered = model_factory(name, "logistic_regression")
    tracking.promote(name, registered.version)
    return Champion(name, registered.version, tracking.model_versions(name))


