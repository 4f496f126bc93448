"""What a person does to a version under trial: promote or drop a shadow, and the refusal
to treat a shadow as a canary. The deployments page and the ``model_server_ops`` DAG both
act through these, so a shadow ends the same way whoever ends it."""

from __future__ import annotations

from ctcd.deployers.base import ModelDeployer, SupportsPromotion, SupportsRollback
from ctcd.deployers.shadow import summarize
from ctcd.deployers.traffic import NoRolloutInProgress
from ctcd.errors import DeploymentError, InvalidParams


def refuse_if_shadowed(deployer: ModelDeployer, target: str, action: str) -> None:
    """A shadow is no canary: rolling it back or promoting it as one would hide what it is
    (and a rollback with no rollout would redeploy an older version)."""
    shadow = deployer.describe_model_server(target).shadow
    if shadow is not None:
        raise NoRolloutInProgress(
            f"version {shadow.get('version')} is a shadow (it answers no client), not a "
            f"rollout: use promote_shadow to make it live, or drop_shadow to unload it; "
            f"nothing was changed by {action!r}")


def end_shadow(deployer: ModelDeployer, target: str, promote: bool, timeout: float) -> str:
    """Promote the shadow (all traffic to it at once, the live versions unloaded: what the
    shadow strategy does when its analysis passes) or drop it (unloaded; the live version
    untouched), through the deployer's ``promote_model_server`` / ``rollback_model_server``
    (``rollout_only``: should the shadow end meanwhile, nothing else is rolled back), which
    end a version under trial on the server and record it, and end a ``shadow`` deploy still
    waiting for its analysis with that outcome. Returns what happened, with the comparison
    at that moment."""
    described = deployer.describe_model_server(target)
    shadow = described.shadow
    verb = "promote" if promote else "drop"
    if shadow is None:
        raise NoRolloutInProgress(
            f"model server {described.handle.server_name!r} runs no shadow now, so there is "
            f"no shadow to {verb} (it may have ended already: see its history)")
    version, live = str(shadow.get("version")), described.handle.model_version
    evidence = summarize(shadow.get("cumulative") or {})
    if promote:
        if not isinstance(deployer, SupportsPromotion):
            raise InvalidParams(f"the {deployer.name!r} backend cannot promote by hand")
        handle = deployer.promote_model_server(target, timeout=timeout)
        if handle.model_version != version:
            raise DeploymentError(
                f"promoting the shadow left version {handle.model_version} serving, not the "
                f"shadow version {version}; check the server's versions on its page")
        return (f"shadow version {version} promoted: it serves all traffic, version {live} "
                f"was unloaded. Its comparison then: {evidence}")
    if not isinstance(deployer, SupportsRollback):
        raise InvalidParams(f"the {deployer.name!r} backend cannot drop a shadow by hand")
    handle = deployer.rollback_model_server(target, timeout=timeout, rollout_only=True)
    return (f"shadow version {version} dropped (unloaded): version {handle.model_version} "
            f"serves as before. Its comparison then: {evidence}")
