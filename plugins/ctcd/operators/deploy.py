"""Deploy a registered model version to its model server, waiting deferrably for readiness."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

from ctcd.deployers import DEFAULT_TIMEOUT, DeploymentConfig, get_deployer
from ctcd.errors import CtcdError, DeploymentError, ServerStartFailed, ShadowAwaitingDecision
from ctcd.operators.links import DeploymentPageLink, MlflowRunLink, ModelServerLink
from ctcd.services.handle import ServiceHandle, ServiceStatus
from ctcd.triggers.model_server import ModelServerReadyTrigger

DEPLOYMENT_KEY = "deployment"


class DeployModelOperator(BaseOperator):
    """Deploy ``model_name`` version ``model_version`` with a strategy; returns a
    :class:`~ctcd.services.ServiceHandle` (XCom).

    :param model_name: registered model name (templated).
    :param model_version: registered version to serve (templated).
    :param model_uri: where to load it from (templated); default ``models:/<name>/<version>``.
    :param mlflow_run_id: run that produced the model, for lineage and the MLflow link
        (templated).
    :param strategy: ``replace``, ``blue_green``, ``canary`` or ``shadow`` (templated).
    :param strategy_options_for: the strategy ``strategy_options`` were written for (a model
        file's ``deployment.strategy``); a run that deploys with another strategy uses that
        strategy's defaults, since one strategy's options mean nothing to another. Empty:
        the options are for whatever ``strategy`` renders to.
    :param strategy_options: options of the strategy, e.g. ``{"steps": [0.1, 0.5],
        "interval_seconds": 30, "max_error_rate": 0.02}`` for canary.
    :param server: model-server name; default one server per model (templated).
    :param workers: model-server worker processes.
    :param server_options: the model server's non-secret settings (``ServerSettings`` names,
        e.g. ``{"max_batch_rows": "256"}``).
    :param timeout: seconds for the whole deployment, readiness included.
    :param deployer: backend name or dotted path; default ``CTCD_DEPLOYER``.
    :param hold_inconclusive_shadow: with the ``shadow`` strategy, a comparison with too few
        mirrored requests to judge leaves the shadow running (``inconclusive: hold``) and the
        task succeeds with the live version's handle and the ``deployment`` record (outcome
        ``held``), so a person decides (the training DAG's approval); otherwise such a
        deploy fails (templated: the training DAG passes ``{{ params.approval }}``).
    :param deferrable: when a server has to be started, wait for it in the triggerer
        instead of holding a worker slot (``deploy_model(..., wait=False)``; a backend that
        cannot hand over a starting server returns it ready, and nothing is deferred).
    """

    template_fields: Sequence[str] = (
        "model_name", "model_version", "model_uri", "mlflow_run_id", "strategy", "server",
        "hold_inconclusive_shadow",
    )
    operator_extra_links = (DeploymentPageLink(), ModelServerLink(), MlflowRunLink())
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        model_name: str,
        model_version: str,
        model_uri: str | None = None,
        mlflow_run_id: str | None = None,
        strategy: str = "replace",
        strategy_options: Mapping[str, Any] | None = None,
        server: str | None = None,
        workers: int = 1,
        server_options: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        deployer: str | None = None,
        deferrable: bool = True,
        poll_interval: float = 1.0,
        hold_inconclusive_shadow: bool | str = False,
        strategy_options_for: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.model_version = model_version
        self.model_uri = model_uri
        self.mlflow_run_id = mlflow_run_id
        self.strategy = strategy
        self.strategy_options = dict(strategy_options or {})
        self.server = server
        self.workers = workers
        self.server_options = dict(server_options or {})
        self.timeout = timeout
        self.deployer = deployer
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.hold_inconclusive_shadow = hold_inconclusive_shadow
        self.strategy_options_for = strategy_options_for

    def config(self, context: Mapping[str, Any]) -> DeploymentConfig:
        ti = context["ti"]
        version = str(self.model_version)
        return DeploymentConfig(
            model_name=self.model_name,
            model_version=version,
            model_uri=self.model_uri or f"models:/{self.model_name}/{version}",
            mlflow_run_id=self.mlflow_run_id or None,
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
            server=self.server or None,
            workers=self.workers,
            server_options=self.server_options,
        )

    def execute(self, context: Any) -> ServiceHandle:
        deployer = get_deployer(self.deployer)
        options = self.strategy_options
        if options and self.strategy_options_for not in (None, self.strategy):
            self.log.info("deploying with %s's default options: the strategy_options %s are "
                          "for %s", self.strategy, options, self.strategy_options_for)
            options = {}
        strategy = {"name": self.strategy, **options}
        if self.strategy == "shadow" and str(self.hold_inconclusive_shadow).lower() in (
                "true", "1"):
            strategy["inconclusive"] = "hold"
        config = self.config(context)
        deadline = time.time() + self.timeout
        try:
            handle = deployer.deploy_model(
                config, strategy=strategy, timeout=self.timeout, wait=not self.deferrable
            )
        except ShadowAwaitingDecision as held:
            return self._held(context, deployer, config, held)
        if not self.deferrable or deployer.status(handle.service_id) is ServiceStatus.RUNNING:
            return self._keep_record(context, deployer, handle)
        self.log.info("model server %s starting at %s; waiting in the triggerer",
                      handle.server_name, handle.endpoint)
        self.defer(
            trigger=ModelServerReadyTrigger(
                handle.endpoint, handle.model_name, deadline=deadline,
                poll_interval=self.poll_interval, payload={"handle": handle.serialize()},
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 60),
        )

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> ServiceHandle:
        started = ServiceHandle.deserialize(dict(event["handle"]), ServiceHandle.__version__)
        deployer = get_deployer(started.backend)
        if event.get("status") != "ready":
            deployer.stop_model_server(started.service_id, timeout=30, force=True)
            raise ServerStartFailed(
                f"model server {started.server_name!r} at {started.endpoint} was not ready "
                f"within {self.timeout:.0f}s (last status: {event.get('last_status')}), so it "
                f"was stopped; see `ctcd models logs {started.service_id}`"
            )
        # Re-check through the deployer: it confirms that the very server it started serves.
        status = deployer.status(started.service_id)
        if status is not ServiceStatus.RUNNING:
            deployer.stop_model_server(started.service_id, timeout=30, force=True)
            raise ServerStartFailed(
                f"model server {started.server_name!r} at {started.endpoint} answered ready, "
                f"then read {status.value} when checked again, so it was stopped; see "
                f"`ctcd models logs {started.service_id}`"
            )
        return self._keep_record(context, deployer, started)

    def _held(self, context: Any, deployer: Any, config: DeploymentConfig,
              held: ShadowAwaitingDecision) -> ServiceHandle:
        """The shadow was left running for a person: the live server's handle, and the
        record (outcome ``held``) for the approval's evidence."""
        self.log.warning("%s", held.message)
        found = deployer.find_model_server(server_name=config.server_name)
        if not found:
            raise DeploymentError(f"model server {config.server_name!r} holds shadow version "
                                  f"{held.version}, but the deployer no longer finds it")
        self.log.info("version %s shadows version(s) %s on %s: a person decides (promote it "
                      "to live, or drop it)", held.version, ", ".join(held.live_versions),
                      found[0].endpoint)
        return self._keep_record(context, deployer, found[0], run_id=config.run_id,
                                 version=config.model_version)

    def _keep_record(self, context: Any, deployer: Any, handle: ServiceHandle, *,
                     run_id: str | None = None, version: str | None = None) -> ServiceHandle:
        """The backend's record of this deployment (strategy, outcome, the strategy's notes:
        the analysis a person reads before approving it) as the XCom ``deployment``; by
        default the record of the version the handle serves."""
        try:
            history = deployer.describe_model_server(handle.service_id).history
        except CtcdError as err:
            self.log.warning("could not read the record of this deployment: %s", err.message)
            return handle
        for event in history:
            if (event.config.run_id, event.config.model_version) == (
                    run_id or handle.run_id, version or handle.model_version):
                record = event.to_dict()
                for note in record["notes"]:
                    self.log.info("%s: %s", record["strategy"], note)
                context["ti"].xcom_push(key=DEPLOYMENT_KEY, value=record)
                break
        return handle
