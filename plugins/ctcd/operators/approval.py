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

from ctcd.operators import answers

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
        earlier = answers.earlier_try(context)
        if earlier is not None and earlier.acted is not None:
            self.log.info(
                "Try %s acted on the answer (%s) and was then stopped by the scheduler "
                "(Airflow 3.3 fails a try answered moments after it asked): finishing "
                "without acting twice.", earlier.try_number, earlier.acted["chosen_options"])
            return self._finish(context, answers.as_event(earlier.acted))
        if earlier is not None:
            return self._recover(context, earlier.try_number)
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
        answers.record_asked(context)
        return super().execute(context)

    def _recover(self, context: Any, asked_in: int) -> Any:
        """An earlier try asked and never acted on an answer: the scheduler stopped it.

        Asking again would erase the answer given (the base class's request clears it), and
        a task cannot read it; a trigger can. So this try defers to
        :class:`~ctcd.operators.answers.AnswerGivenTrigger`, which waits until the scheduler
        has seen this try's exit, then reads the answer given; with none,
        ``execute_complete`` asks again.
        """
        self.log.info(
            "Try %s asked for approval and was stopped by the scheduler before it acted on an "
            "answer (Airflow 3.3 fails a try answered moments after it asked). Reading the "
            "answer given (in %d s, once the scheduler has seen this try exit); if none was "
            "given, the question is asked again.", asked_in, answers.RECOVERY_SECONDS)
        self.defer(trigger=answers.AnswerGivenTrigger(ti_id=str(context["ti"].id),
                                                      delay=answers.RECOVERY_SECONDS),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event.get(answers.NO_ANSWER):
            self.log.info("No answer had been given to the earlier try's question: asking "
                          "again.")
            return self._ask(context)
        if "error" in event:
            return super().execute_complete(context=context, event=event)
        version = str(self.registered["version"])
        who, at = _who(event.get("responded_by_user")), _at(event.get("responded_at"))
        if _rejected(event, self.REJECT):
            # Before the base class skips `promote`: that ends this call (Airflow 3 skips
            # downstream tasks by raising), so the rollback must be done first.
            minutes = int(context["params"].get("approval_timeout_minutes") or 1440)
            answer = (f"rejected by {who} at {at}" if who else
                      f"rejected: no answer within {minutes} minutes (the default answer)")
            _tag(self.registered, answer)
            rolled_back = _roll_back(context["ti"], self.deploy_task_id, self.registered)
            self.log.info("Version %s %s; promote is skipped. Rolled back: %s.", version,
                          answer, rolled_back)
        else:
            if _held(context["ti"], self.deploy_task_id):
                # The shadow left running for this decision goes live before promote.
                from ctcd.tasks import end_held_shadow

                live = end_held_shadow(context["ti"].xcom_pull(task_ids=self.deploy_task_id),
                                       version, promote=True)
                self.log.info("Approved: %s.", live)
            _tag(self.registered, f"approved by {who} at {at}")
        answers.record_acted(context, event)  # a retry of this try must not act twice
        return self._finish(context, event)

    def _finish(self, context: Any, event: dict[str, Any]) -> Any:
        """The base class's end (it skips ``promote`` on Reject, by raising) and the result."""
        who, at = _who(event.get("responded_by_user")), _at(event.get("responded_at"))
        result = super().execute_complete(context=context, event=event)
        if _rejected(event, self.REJECT):  # only when nothing is downstream to skip
            return {"approval": "rejected", "by": who, "at": at}
        self.log.info("Version %s approved by %s at %s: promoting it.",
                      self.registered["version"], who, at)
        return {"approval": "approved", "by": who, "at": at,
                "chosen": list(result["chosen_options"])}


def _rejected(event: Mapping[str, Any], reject: str) -> bool:
    return list(event.get("chosen_options") or []) == [reject]


def _at(responded: Any) -> str | None:
    return responded.isoformat() if isinstance(responded, datetime) else (
        str(responded) if responded else None)


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


def _who(user: Any) -> str | None:
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "") or None
    return str(user) if user else None


def _tag(registered: Mapping[str, Any], answer: str) -> None:
    from ctcd.tracking import get_tracking

    get_tracking().client.set_model_version_tag(
        str(registered["model_name"]), str(registered["version"]), APPROVAL_TAG, answer)


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

