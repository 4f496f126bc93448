"""Human approval before promotion: Airflow's own ``ApprovalOperator`` with the evidence.

Between ``verify`` and ``promote`` of a training DAG. Off unless the run's ``approval``
Param is true (its default is the model file's ``deployment.approval``); then the task
waits in ``awaiting_input`` under the UI's Required Actions (or ``PATCH
.../taskInstances/approve/-1/hitlDetails`` over the REST API) with a Markdown page of the
evidence (:mod:`ctcd.pipelines.approval`). **Approve**: ``promote`` runs. **Reject**, or no
answer within ``approval_timeout_minutes`` (the default answer is Reject): ``promote`` is
skipped and the new version is rolled back, so the champion serves again. Who answered is
kept on the registry version (tag ``ctcd.approval``) for the lineage.

A ``shadow`` deploy whose comparison had too few mirrored requests to judge leaves the
shadow running when approval is on (the deploy's outcome ``held``): the evidence shows its
comparison as the server has it when asked; **Approve** makes the shadow live, then
``promote`` runs; **Reject** (or no answer) drops it, and the live version never stopped
serving.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

APPROVAL_TAG = "ctcd.approval"


class ApproveDeploymentOperator(ApprovalOperator):
    """Ask a person to approve the version the run deployed and verified.

    :param registered: the ``register`` step's result (an XComArg): model name and version.
    :param deploy_task_id: the deploy task (its ``ServiceHandle`` and ``deployment`` XComs).
    """

    template_fields = (*ApprovalOperator.template_fields, "registered")
    ui_color = "#fff3cd"

    def __init__(self, *, registered: Any, deploy_task_id: str = "deploy",
                 **kwargs: Any) -> None:
        # The wait is bounded by response_timeout (the run's approval_timeout_minutes), not
        # by the DAG's default execution_timeout, which the base class would take for it.
        kwargs["execution_timeout"] = None
        super().__init__(subject="Promote the new version?", defaults="Reject", **kwargs)
        self.registered = registered
        self.deploy_task_id = deploy_task_id

    def execute(self, context: Any) -> Any:
        params = context["params"]
        if not params.get("approval"):
            self.log.info("Approval is off for this run (model file deployment.approval and "
                          "the run's `approval` Param): promoting without asking.")
            return {"approval": "off"}
        answered = _answered_before(context["ti"])
        if answered is not None:
            # A retry after the answer came: act on it instead of asking again. (Airflow
            # 3.3's scheduler can fail a task answered before it processed the asking
            # workload's exit, "state changed externally", and retry it.)
            self.log.info("This approval was answered before this try (%s by %s): acting "
                          "on that answer.", answered["chosen_options"],
                          _who(answered["responded_by_user"]) or "the default")
            return self.execute_complete(context, answered)
        from ctcd.pipelines import approval

        minutes = int(params.get("approval_timeout_minutes") or 1440)
        evidence = approval.Evidence(
            registered=self.registered, timeout_minutes=minutes,
            **_pulled(context["ti"], self.deploy_task_id))
        self.subject = approval.subject(evidence)
        self.body = approval.body(evidence)
        self.response_timeout = timedelta(minutes=minutes)
        self.log.info("Waiting for a person to approve %s version %s (Required Actions; no "
                      "answer within %d minutes rejects it):\n%s", self.registered["model_name"],
                      self.registered["version"], minutes, self.body)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        name, version = self.registered["model_name"], str(self.registered["version"])
        who = _who(event.get("responded_by_user"))
        responded = event.get("responded_at")
        at = responded.isoformat() if isinstance(responded, datetime) else (
            str(responded) if responded else None)
        rejected = "error" not in event and list(event.get("chosen_options") or []) == [
            self.REJECT]
        if rejected:
            # Before the base class skips `promote`: that ends this call (Airflow 3 skips
            # downstream tasks by raising), so the rollback must be done first.
            minutes = int(context["params"].get("approval_timeout_minutes") or 1440)
            answer = (f"rejected by {who} at {at}" if who else
                      f"rejected: no answer within {minutes} minutes (the default answer)")
            _tag(name, version, answer)
            rolled_back = _roll_back(context["ti"], self.deploy_task_id, self.registered)
            self.log.info("Version %s %s; promote is skipped. Rolled back: %s.", version,
                          answer, rolled_back)
        elif "error" not in event and _held(context["ti"], self.deploy_task_id):
            # Approved: the shadow left running for this decision goes live before promote.
            from ctcd.tasks import end_held_shadow

            live = end_held_shadow(context["ti"].xcom_pull(task_ids=self.deploy_task_id),
                                   version, promote=True)
            self.log.info("Approved: %s.", live)
        result = super().execute_complete(context=context, event=event)
        if rejected:  # only when nothing is downstream to skip
            return {"approval": "rejected", "by": who, "at": at}
        answer = f"approved by {who} at {at}"
        self.log.info("Version %s %s: promoting it.", version, answer)
        _tag(name, version, answer)
        return {"approval": "approved", "by": who, "at": at,
                "chosen": list(result["chosen_options"])}


def _pulled(ti: Any, deploy_task_id: str) -> dict[str, Any]:
    """The run's steps' results, for the evidence."""
    from ctcd.operators.links import deployment_page_url

    def pull(task_id: str, key: str = "return_value") -> Mapping[str, Any]:
        value = ti.xcom_pull(task_ids=task_id, key=key)
        return value if isinstance(value, Mapping) else {}

    handle = ti.xcom_pull(task_ids=deploy_task_id)
    deployment = dict(pull(deploy_task_id, "deployment"))
    if handle is not None:
        deployment.update(server_name=handle.server_name, endpoint=handle.endpoint,
                          strategy=deployment.get("strategy") or handle.strategy)
    registered = pull("register")
    links = {"Deployment page": deployment_page_url(handle) if handle is not None else "",
             **_mlflow_links(registered)}
    return {"evaluation": pull("evaluate"), "decision": pull("deployment_trigger", "decision"),
            "ingested": pull("ingest"), "validation": pull("validate"),
            "deployment": deployment, "verified": pull("verify"), "links": links,
            "shadow": _shadow_now(handle) if _held(ti, deploy_task_id) else {}}


def _shadow_now(handle: Any) -> Mapping[str, Any]:
    """The comparison of the shadow left running for this decision, as the server has it
    now (it kept comparing since the deploy ended)."""
    from ctcd.deployers import get_deployer
    from ctcd.errors import CtcdError

    try:
        shadow = get_deployer(handle.backend).describe_model_server(handle.service_id).shadow
    except CtcdError:  # the server does not answer: the deploy's record still tells
        return {}
    if not shadow:
        return {}
    return {**shadow, "live_versions": shadow.get("live_versions") or [handle.model_version]}


def _mlflow_links(registered: Mapping[str, Any]) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    from ctcd.tracking import get_tracking

    tracking = get_tracking()
    if not registered or not tracking.uri.startswith(("http://", "https://")):
        return {}
    base = tracking.uri.rstrip("/")
    links = {"Registry version": f"{base}/#/models/{registered['model_name']}/versions/"
                                 f"{registered['version']}"}
    with contextlib.suppress(MlflowException):  # MLflow down: the other links still help
        links["MLflow run"] = tracking.run_url(str(registered["run_id"])) or ""
    return links


def _answered_before(ti: Any) -> dict[str, Any] | None:
    """The answer this task instance got in an earlier try, if any (a first try has none)."""
    if int(getattr(ti, "try_number", 1) or 1) <= 1:
        return None
    from airflow.sdk.api.datamodels._generated import HITLDetailResponse
    from airflow.sdk.exceptions import AirflowRuntimeError
    from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

    try:
        found = get_hitl_detail_content_detail(ti.id)
    except AirflowRuntimeError:  # never asked
        return None
    if not isinstance(found, HITLDetailResponse) or not (
            found.response_received and found.chosen_options):
        return None
    user = found.responded_by_user
    return {"chosen_options": list(found.chosen_options),
            "params_input": found.params_input or {}, "responded_at": found.responded_at,
            "responded_by_user": user.model_dump() if user is not None else None}


def _who(user: Any) -> str | None:
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "") or None
    return str(user) if user else None


def _tag(model_name: str, version: str, answer: str) -> None:
    from ctcd.tracking import get_tracking

    get_tracking().client.set_model_version_tag(model_name, version, APPROVAL_TAG, answer)


def _held(ti: Any, deploy_task_id: str) -> bool:
    """Did the deploy leave a shadow running for this decision (too few requests to judge)?"""
    from ctcd.deployers.base import HELD

    record = ti.xcom_pull(task_ids=deploy_task_id, key="deployment")
    return isinstance(record, Mapping) and record.get("outcome") == HELD


def _roll_back(ti: Any, deploy_task_id: str, registered: Mapping[str, Any]) -> str:
    """Reject: drop a held shadow (the live version never stopped serving), or put the
    champion back on the server."""
    from ctcd.tasks import end_held_shadow, roll_back

    handle = ti.xcom_pull(task_ids=deploy_task_id)
    if _held(ti, deploy_task_id):
        return end_held_shadow(handle, str(registered["version"]), promote=False)
    return roll_back(handle, str(registered["model_name"]), str(registered["version"]))
