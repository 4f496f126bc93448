"""One errors module for the whole project.

Every error says what went wrong and what to do. Errors that reach an HTTP client carry
their status code (``status_code``), so transports turn them into responses without
guessing.
"""

from __future__ import annotations


class CtcdError(Exception):
    """Root of every error this project raises on purpose."""

    status_code: int = 500

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class InvalidParams(CtcdError):
    """A DAG run's ``conf``/Params do not describe a valid run."""

    status_code = 400


class DataValidationError(CtcdError):
    """A data snapshot failed validation; the run stops before anything is trained."""

    status_code = 422

    def __init__(self, message: str, *, report_path: str | None = None) -> None:
        super().__init__(message)
        self.report_path = report_path


class TrainingError(CtcdError):
    """The trainer could not produce a model that can be logged (it failed to import, it
    raised, or it returned something that is not a model); nothing is registered."""

    status_code = 422


class DeploymentError(CtcdError):
    """A deployment failed; the previously serving version keeps serving. ``notes`` are the
    strategy's analysis up to the failure, when a strategy ran."""

    status_code = 502
    notes: tuple[str, ...] = ()


class ModelServerNotFound(CtcdError):
    status_code = 404

    def __init__(self, selector: str) -> None:
        super().__init__(
            f"No model server matches {selector}. "
            "List the known servers with `ctcd models list`."
        )


# --- Model deployers and services (issue 4) -------------------------------------------------


class InvalidDeployer(CtcdError):
    """``CTCD_DEPLOYER`` names no usable backend."""

    status_code = 400


class InvalidStrategy(InvalidParams):
    """A deployment strategy name or its options are invalid (a bad parameter: no retry)."""


class ServerStartFailed(DeploymentError):
    """A model-server process exited, or did not become ready, within its timeout."""


class ServerStopFailed(DeploymentError):
    """A model-server process did not stop within its timeout (retry with force)."""


class PortUnavailable(DeploymentError):
    """No free port, or a server's remembered port is held by another process."""


class VersionRejected(DeploymentError):
    """The model server could not load or warm the new version; nothing changed."""


class RolledBack(DeploymentError):
    """The new version failed its checks under traffic; traffic went back to the old one."""

    def __init__(self, message: str, *, kept_version: str, failed_version: str) -> None:
        super().__init__(message)
        self.kept_version = kept_version
        self.failed_version = failed_version


class ShadowDropped(DeploymentError):
    """A shadow version's comparison with the live one failed its limits; it was unloaded
    and never answered a client."""

    def __init__(self, message: str, *, failed_version: str) -> None:
        super().__init__(message)
        self.failed_version = failed_version


class ShadowInconclusive(ShadowDropped):
    """Too few mirrored requests to judge a shadow version; it was unloaded."""


class ShadowAwaitingDecision(DeploymentError):
    """Too few mirrored requests to judge a shadow version, and the deploy was asked to hand
    the decision to a person (``inconclusive: hold``): the shadow keeps running, answering
    no client, until it is promoted or dropped (``promote_model_server`` /
    ``rollback_model_server``, the deployments page, the training DAG's approval)."""

    status_code = 409

    def __init__(self, message: str, *, version: str, live_versions: list[str]) -> None:
        super().__init__(message)
        self.version = version
        self.live_versions = live_versions


class ModelServerUnavailable(CtcdError):
    """The model server behind a handle does not answer (stopped, crashed or unreachable)."""

    status_code = 503


class PredictionFailed(CtcdError):
    """The model server answered a prediction request with an error."""

    status_code = 502
