"""The one MLflow client: an explicit tracking URI, the registry aliases, run logging.

Every stage that talks to MLflow gets a :class:`Tracking` passed in, built here from one
place (:func:`get_tracking`: the Airflow connection ``mlflow_default`` when it exists,
else the project's settings). Nothing sets MLflow's process-global tracking URI for
others to rely on: the few MLflow functions that only exist in the "fluent" form
(``log_model``, ``load_model`` of a ``models:/`` URI) run inside :meth:`Tracking.active`,
which points MLflow at this URI for the duration of the block and restores it after.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHALLENGER: Final = "challenger"
CHAMPION: Final = "champion"
EXPERIMENT: Final = "continuous_training"


def get_tracking(mlflow_conn_id: str = "mlflow_default") -> Tracking:
    """The project's MLflow: the Airflow connection when defined, else the settings' URI."""
    from ctcd.settings import get_settings

    try:
        from ctcd.hooks.mlflow_tracking import MlflowHook
    except ImportError:  # used outside an Airflow installation
        return Tracking(get_settings().tracking_uri())
    return Tracking(MlflowHook(mlflow_conn_id).tracking_uri)


# What mlflow.set_*_uri export for subprocesses, and what names an experiment or a run to
# MLflow's fluent API through the environment.
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_RUN_ENV = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@dataclass(frozen=True)
class Tracking:
    """An MLflow tracking server (and its model registry) at ``uri``."""

    uri: str
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Point MLflow's fluent API at this server for the block, then restore it exactly
        (its global, its registry, its active experiment, and the ``MLFLOW_TRACKING_URI``
        and ``MLFLOW_REGISTRY_URI`` that ``mlflow.set_*_uri`` export for subprocesses: a
        registry URI left behind would send every later ``models:/`` lookup of the process
        to this server, even after it is gone). The experiment and run named by the
        environment (``MLFLOW_EXPERIMENT_ID`` / ``_NAME``, ``MLFLOW_RUN_ID``) are another
        server's: they are out of the environment inside the block, and back after it."""
        import os

        import mlflow
        from mlflow.tracking import fluent
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        saved_env = {name: os.environ.get(name) for name in (*_URI_ENV, *_RUN_ENV)}
        saved = (
            tracking_utils._tracking_uri,
            registry_utils._registry_uri,
            fluent._active_experiment_id,
        )
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        # An experiment set by someone else's set_experiment() belongs to another server
        # (and would refuse to resume a run of ours): none is active inside the block, nor
        # the one set_experiment() exports (MLFLOW_EXPERIMENT_ID, which a task inherits from
        # whoever started Airflow), nor a run named by the environment.
        fluent._active_experiment_id = None
        for name in _RUN_ENV:
            os.environ.pop(name, None)
        try:
            yield
        finally:
            tracking_utils._tracking_uri = saved[0]
            registry_utils._registry_uri = saved[1]
            fluent._active_experiment_id = saved[2]
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # --- experiments and runs ----------------------------------------------------------

    def experiment_id(self, name: str = EXPERIMENT) -> str:
        if name not in self._cache:
            experiment = self.client.get_experiment_by_name(name)
            self._cache[name] = (
                experiment.experiment_id if experiment else self.client.create_experiment(name)
            )
        return str(self._cache[name])

    def search_runs(
        self, filter_string: str, *, experiment: str = EXPERIMENT, max_results: int = 1000
    ) -> list[Any]:
        return list(
            self.client.search_runs(
                [self.experiment_id(experiment)], filter_string, max_results=max_results
            )
        )

    def log_artifacts(self, run_id: str, paths: Mapping[str, Path]) -> None:
        """Log files or directories under the given artifact paths of ``run_id``."""
        for artifact_path, path in paths.items():
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path)
            elif path.is_file():
                self.client.log_artifact(run_id, str(path), artifact_path)

    def run_url(self, run_id: str) -> str | None:
        """The tracking UI page of a run (None when the store has no UI, e.g. SQLite)."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        experiment_id = self.client.get_run(run_id).info.experiment_id
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    # --- the model registry ------------------------------------------------------------

    def register(
        self, model_uri: str, model_name: str, *, run_id: str, tags: Mapping[str, str] | None = None
    ) -> str:
        """Register ``model_uri`` as a new version of ``model_name``, aliased ``challenger``.

        Idempotent for a retried task: a version already registered from the same run is
        reused.
        """
        from mlflow.exceptions import MlflowException

        existing: list[Any]
        try:
            existing = list(
                self.client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
            )
        except MlflowException:
            existing = []
        if existing:
            version = str(max(int(mv.version) for mv in existing))
        else:
            import mlflow

            # register_model resolves MLflow 3 logged-model URIs (models:/m-...) to their
            # source and model id, which create_model_version alone does not.
            with self.active():
                created = mlflow.register_model(model_uri, model_name, tags=dict(tags or {}))
            version = str(created.version)
        self.client.set_registered_model_alias(model_name, CHALLENGER, version)
        return version

    def alias_version(self, model_name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(model_name, alias).version)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            if "not found" in str(err).lower() or "does not exist" in str(err).lower():
                return None
            raise

    def champion_version(self, model_name: str) -> str | None:
        return self.alias_version(model_name, CHAMPION)

    def promote(self, model_name: str, version: str) -> None:
        """Make ``version`` the champion (the version the serving endpoint answers with)."""
        self.client.set_registered_model_alias(model_name, CHAMPION, version)
        if self.alias_version(model_name, CHALLENGER) == version:
            self.client.delete_registered_model_alias(model_name, CHALLENGER)

    def model_versions(self, model_name: str) -> list[str]:
        return [
            str(mv.version) for mv in self.client.search_model_versions(f"name = '{model_name}'")
        ]
