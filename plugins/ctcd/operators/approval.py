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

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

APPROVAL_TAG = "ctcd.approval"
# The task state store key saying which try asked (kept across tries, gone once acted on).
ASKED_KEY = "ctcd.approval.asked"
# How long a retried try waits before reading an answer given to an earlier try: the
# scheduler must have seen it exit first, or it fails the resumed try again.
RECOVERY_SECONDS = 10
NO_ANSWER = "no_answer"  # AnswerGivenTrigger's event when nobody had answered


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
        asked = context["task_state_store"].get(ASKED_KEY)
        if isinstance(asked, Mapping) and int(asked.get("try", 0)) < _try_number(context):
            return self._recover(context, asked)
        return self._ask(context)

    def _ask(self, context: Any) -> Any:
        """Ask with the evidence and wait in ``awaiting_input`` (the base class's execute)."""
        from ctcd.pipelines import approval

        params = context["params"]
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
        # Kept across tries: a later try knows this one asked (see _recover).
        context["task_state_store"].set(ASKED_KEY, {"try": _try_number(context)})
        return super().execute(context)

    def _recover(self, context: Any, asked: Mapping[str, Any]) -> Any:
        """An earlier try asked and never acted on an answer: the scheduler stopped it.

        Airflow 3.3's scheduler fails a task answered before it has processed the exit of
        the try that asked ("state changed externally") and retries it. Asking again would
        erase the answer given (the base class's request clears it), and a task cannot read
        it; a trigger can. So this try defers to :class:`AnswerGivenTrigger`, which waits
        until the scheduler has seen this try's exit, then reads the answer given; with none,
        ``execute_complete`` asks again.
        """
        self.log.info(
            "Try %s asked for approval and was stopped by the scheduler before it acted on an "
            "answer. Reading the answer given (in %d s, once the scheduler has seen this try "
            "exit); if none was given, the question is asked again.", asked.get("try"),
            RECOVERY_SECONDS)
        self.defer(trigger=AnswerGivenTrigger(ti_id=str(context["ti"].id),
                                              delay=RECOVERY_SECONDS),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event.get(NO_ANSWER):
            self.log.info("No answer had been given to the earlier try's question: asking "
                          "again.")
            return self._ask(context)
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
        context["task_state_store"].delete(ASKED_KEY)  # acted on: a clear asks afresh
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


def _try_number(context: Any) -> int:
    return int(getattr(context["ti"], "try_number", 1) or 1)


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


class AnswerGivenTrigger(BaseTrigger):
    """The answer already given to a task instance's question, read after ``delay`` seconds
    (the HITL detail is readable from a trigger, not from a task): its event is the one the
    approval step gets when answered, or ``{"no_answer": true}``."""

    def __init__(self, *, ti_id: str, delay: float) -> None:
        super().__init__()
        self.ti_id = ti_id
        self.delay = delay

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"ti_id": self.ti_id, "delay": self.delay})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from uuid import UUID

        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
        from asgiref.sync import sync_to_async

        await asyncio.sleep(self.delay)
        found = await sync_to_async(get_hitl_detail_content_detail)(ti_id=UUID(self.ti_id))
        if not (found.response_received and found.chosen_options):
            self.log.info("No answer was given to the earlier question.")
            yield TriggerEvent({NO_ANSWER: True})
            return
        user = found.responded_by_user
        self.log.info("Answer given earlier: %s by %s at %s.", list(found.chosen_options),
                      user.name if user is not None else "the default", found.responded_at)
        yield TriggerEvent({
            "chosen_options": list(found.chosen_options),
            "params_input": found.params_input or {}, "responded_at": found.responded_at,
            "responded_by_user": {"id": user.id, "name": user.name} if user else None,
            "timedout": user is None})
