"""Start, stop, delete, roll back or promote a model server's rollout, or shadow a version,
from a task."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from ctcd.deployers import (
    DEFAULT_TIMEOUT,
    SupportsPromotion,
    SupportsRollback,
    get_deployer,
    resolve_service,
)
from ctcd.deployers.by_hand import end_shadow, refuse_if_shadowed
from ctcd.deployers.lookup import config_for_version
from ctcd.deployers.traffic import NoRolloutInProgress
from ctcd.errors import DeploymentError, InvalidParams, ModelServerNotFound
from ctcd.services.handle import ServiceHandle

Action = Literal["start", "stop", "delete", "rollback", "promote", "shadow", "promote_shadow",
                 "drop_shadow"]
ACTIONS: tuple[str, ...] = ("start", "stop", "delete", "rollback", "promote", "shadow",
                            "promote_shadow", "drop_shadow")


class ModelServerLifecycleOperator(BaseOperator):
    """Apply ``action`` to one model server.

    :param action: ``start``, ``stop``, ``delete``, ``rollback`` or ``promote``
        (templated). ``rollback`` drops the new version of a rollout in progress, else
        redeploys the version that served before the current one (backends with the
        :class:`~ctcd.deployers.SupportsRollback` capability); ``promote`` gives the new
        version of a rollout in progress all traffic at once
        (:class:`~ctcd.deployers.SupportsPromotion`). A backend without the capability fails
        the task at once. ``shadow`` deploys the registered ``model_version`` of the
        server's model with the ``shadow`` strategy (``shadow_options``): it answers no
        client while its answers are compared with the serving version's, then the analysis
        promotes or drops it, or a person does with ``promote_shadow`` / ``drop_shadow``
        (``promote`` and ``rollback`` refuse a shadowed server: a shadow is no canary).
    :param model_version: ``shadow``: the registered version to try (templated).
    :param shadow_options: ``shadow``: the strategy's options, e.g. ``{"mirror_percent":
        50, "min_requests": 200}`` (templated).
    :param service: service id (or unique prefix) or server name (templated); or
    :param model_name: the model whose server to act on (templated).
    :param timeout: seconds to wait for the server to start or stop.
    :param force: stop/delete: kill the server if it does not stop in time.
    :param deployer: backend name or dotted path; default ``CTCD_DEPLOYER``.

    Returns the handle (start, rollback) or ``None``.
    """

    template_fields: Sequence[str] = ("action", "service", "model_name", "timeout", "force",
                                      "model_version", "shadow_options")

    def __init__(
        self,
        *,
        action: str,
        service: str | None = None,
        model_name: str | None = None,
        timeout: float | str = DEFAULT_TIMEOUT,
        force: bool | str = False,
        deployer: str | None = None,
        model_version: str | None = None,
        shadow_options: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_version = model_version
        self.shadow_options = shadow_options
        self.action = action
        self.service = service
        self.model_name = model_name
        self.timeout = timeout
        self.force = force
        self.deployer = deployer

    def execute(self, context: Any) -> ServiceHandle | None:
        timeout, force = float(self.timeout), _as_bool(self.force)
        deployer = get_deployer(self.deployer)
        try:  # naming a server that does not exist will not get better on a retry
            if self.action not in ACTIONS:
                raise InvalidParams(f"action must be one of {ACTIONS}, got {self.action!r}")
            service_id = resolve_service(deployer, _text(self.service), _text(self.model_name))
        except (InvalidParams, ModelServerNotFound) as err:
            raise AirflowFailException(err.message) from err
        self.log.info("%s model server %s", self.action, service_id)
        if self.action == "start":
            return deployer.start_model_server(service_id, timeout=timeout)
        if self.action == "stop":
            deployer.stop_model_server(service_id, timeout=timeout, force=force)
            return None
        if self.action == "delete":
            deployer.delete_model_server(service_id, timeout=timeout, force=force)
            return None
        if self.action == "shadow":
            try:
                config = config_for_version(deployer, service_id, _text(self.model_version) or "")
            except InvalidParams as err:
                raise AirflowFailException(err.message) from err
            strategy = {**_options(self.shadow_options), "name": "shadow"}
            self.log.info("shadowing version %s (%s) against the serving one: %s",
                          config.model_version, config.model_uri, strategy)
            try:
                return deployer.deploy_model(config, strategy=strategy, timeout=timeout)
            except (InvalidParams, DeploymentError) as err:  # dropped: a retry would not help
                raise AirflowFailException(err.message) from err
        if self.action in ("promote_shadow", "drop_shadow"):
            try:
                done = end_shadow(deployer, service_id, self.action == "promote_shadow", timeout)
            except (InvalidParams, DeploymentError) as err:  # no shadow: a retry won't help
                raise AirflowFailException(err.message) from err
            self.log.info("%s", done)
            return deployer.find_model_server(service_id=service_id)[0]
        if self.action in ("promote", "rollback"):
            try:
                refuse_if_shadowed(deployer, service_id, self.action)
            except NoRolloutInProgress as err:
                raise AirflowFailException(err.message) from err
        if self.action == "promote":
            if not isinstance(deployer, SupportsPromotion):
                raise AirflowFailException(
                    f"deployer {deployer.name!r} cannot promote a rollout by hand")
            try:
                return deployer.promote_model_server(service_id, timeout=timeout)
            except NoRolloutInProgress as err:
                raise AirflowFailException(err.message) from err
        if not isinstance(deployer, SupportsRollback):
            raise AirflowFailException(
                f"deployer {deployer.name!r} keeps no deployment history, so it cannot roll "
                "back; deploy the version you want instead"
            )
        return deployer.rollback_model_server(service_id, timeout=timeout)


def _text(value: object) -> str | None:
    """A rendered id or name as text; ``None`` or empty means not given. (Native rendering
    would turn an all-digit id prefix into an int.)"""
    if value is None or value == "":
        return None
    return str(value)


def _options(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """Shadow options as given, or as rendered JSON (``{{ params.shadow_options | tojson }}``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as err:
            raise AirflowFailException(f"shadow_options is not JSON: {err}") from err
    if value is not None and not isinstance(value, dict):
        raise AirflowFailException(f"shadow_options must be an object, got {value!r}")
    return dict(value or {})


def _as_bool(value: bool | str) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
