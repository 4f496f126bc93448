"""Model server operations from the Airflow UI: list, start, stop, delete, roll back, promote,
or shadow a version and end the shadow.

Trigger it with the Params form: choose the action from the dropdown, name the server by
service id / server name, or by model name when the model has one server. Actions taken on
the deployments page (the Deployments entry of the navigation) are recorded here too, as
runs whose `recorded` Param says who did what and how it went: those runs change nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from ctcd.operators.lifecycle import ACTIONS, ModelServerLifecycleOperator

DOC = __doc__ + """
| action | what happens |
|---|---|
| list | prints every model server with its observed status (nothing changes) |
| start | starts a stopped or crashed server, same id, port and version |
| stop | stops it (SIGTERM; with *force*, SIGKILL after the timeout) |
| delete | stops it and forgets it, freeing its port |
| rollback | drops a rollout's new version (a canary), else redeploys the previous one |
| promote | gives the new version of a rollout in progress all traffic now |
| shadow | tries registered *model_version* beside the serving one, answering no client |
| promote_shadow | makes the shadow in progress live now (its comparison is logged) |
| drop_shadow | unloads the shadow in progress; the live version is untouched |

`promote` and `rollback` refuse a server that runs a shadow: a shadow is no canary.
"""


@dag(
    dag_id="model_server_ops",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    tags=["ctcd", "serving", "ops"],
    doc_md=DOC,
    params={
        "action": Param("list", type="string", enum=["list", *ACTIONS],
                        title="Action", description="What to do with the model server."),
        "model_name": Param("churn-classifier", type=["null", "string"], title="Model name",
                            description="Used when no service is given."),
        "service": Param(None, type=["null", "string"], title="Service id or server name",
                         description="From the `list` action or `ctcd models list`."),
        "timeout": Param(120, type="integer", minimum=1, maximum=3600,
                         title="Timeout (seconds)"),
        "force": Param(False, type="boolean", title="Force",
                       description="stop/delete: kill the server if it does not stop in time."),
        "model_version": Param(None, type=["null", "string"], title="Model version",
                               description="shadow: the registered version to try."),
        "shadow_options": Param({}, type="object", title="Shadow options",
                                description="shadow: e.g. {\"mirror_percent\": 50, "
                                "\"min_requests\": 200, \"max_seconds\": 600}."),
        "recorded": Param(None, type=["null", "object"], title="Recorded action",
                          description="Set by the deployments page: the action was already "
                          "done there; this run records who did it and how it went, and "
                          "changes nothing."),
    },
)
def model_server_ops() -> None:
    @task
    def list_servers() -> list[dict[str, Any]]:
        from ctcd.deployers import get_deployer

        deployer = get_deployer()
        rows = []
        for handle in deployer.find_model_server():
            row = {**handle.serialize(), "status": handle.status().value}
            print(f"{row['service_id'][:8]}  {row['server_name']}  v{row['model_version']}  "
                  f"{row['status']}  {row['endpoint']}")
            rows.append(row)
        return rows

    @task.short_circuit
    def changes_something() -> bool:
        params = get_current_context()["params"]
        recorded = params.get("recorded")
        if recorded:
            print(f"Recorded: {recorded.get('action')} of {recorded.get('kind', 'server')} "
                  f"{recorded.get('name')} by {recorded.get('by')} from "
                  f"{recorded.get('from', 'elsewhere')} at {recorded.get('at')}: "
                  f"{recorded.get('outcome')} ({recorded.get('message')}). Nothing to do.")
            return False
        return bool(params["action"] != "list")

    apply = ModelServerLifecycleOperator(
        task_id="apply",
        action="{{ params.action }}",
        service="{{ params.service or '' }}",
        model_name="{{ params.model_name or '' }}",
        timeout="{{ params.timeout }}",
        force="{{ params.force }}",
        model_version="{{ params.model_version or '' }}",
        shadow_options="{{ params.shadow_options | tojson }}",
    )

    list_servers() >> changes_something() >> apply


model_server_ops()
