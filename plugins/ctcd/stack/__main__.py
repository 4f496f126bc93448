"""`python -m ctcd.stack demo|up|status|stop` (what `make demo` / `make stop` run)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctcd.settings import PROJECT_ROOT
from ctcd.stack.airflow_api import AirflowClient
from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER
from ctcd.stack.embedded import PROFILES, Stack
from ctcd.validation.docs_site import page_link

DEMO_MODEL = "churn"  # include/models/churn.yaml
DAG_ID = f"{DEMO_MODEL}_training"
BATCH_DAG_ID = f"{DEMO_MODEL}_batch_inference"
SCORING_ROWS = 2_000
PRODUCER_ID = "data_producer"
EXAMPLE_REQUEST = PROJECT_ROOT / "include" / "examples" / "churn_request.json"


def _say(message: str) -> None:
    print(f"[ctcd] {message}", flush=True)


def _endpoint_from_xcom(value: Any) -> str | None:
    if isinstance(value, dict):
        data = value.get("__data__", value)
        if isinstance(data, dict) and isinstance(data.get("endpoint"), str):
            return str(data["endpoint"])
    return None


def _serving_endpoint(client: AirflowClient, run_id: str) -> str | None:
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run_id)}
    if states.get("deploy") == "success":
        endpoint = _endpoint_from_xcom(client.xcom(DAG_ID, run_id, "deploy"))
        if endpoint:
            return endpoint
    # The trigger decided not to deploy (the champion is better): the champion still serves.
    from ctcd.deployers import get_deployer
    from ctcd.models import load_model

    servers = get_deployer().find_model_server(model_name=load_model(DEMO_MODEL).model_name,
                                               running=True)
    return servers[0].endpoint if servers else None


def _asset_triggered_run(
    client: AirflowClient, after: str, timeout: float = 180.0
) -> dict[str, Any] | None:
    """The training run the data set's Asset event scheduled (None if none came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.request(
            "GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "asset_triggered"}
        )
        if response.status_code == 200:
            runs = [r for r in response.json()["dag_runs"] if (r.get("queued_at") or "") >= after]
            if runs:
                return dict(runs[-1])
        time.sleep(2)
    return None


def demo(stack: Stack, conf: dict[str, Any], rows: int = 20_000) -> int:
    """Land today's partition with the data_producer DAG; its Asset event starts the churn
    model's training DAG, which ingests it from the landing location through GX. With a
    ``conf``, the training DAG is triggered with it instead."""
    started = time.monotonic()
    _say(f"state directory: {stack.home}")
    _say(f"starting the {stack.profile} stack: {', '.join(stack.components)}...")
    stack.up()
    _say(f"stack is up after {time.monotonic() - started:.0f}s")
    client = AirflowClient(stack.airflow_url, ADMIN_USER, ADMIN_PASSWORD)
    try:
        client.wait_for_dag(DAG_ID)
        client.wait_for_dag(PRODUCER_ID)
        client.set_paused(DAG_ID, False)
        today = datetime.now(UTC).date().isoformat()
        _land_scoring(client, today)
        produced = client.trigger(PRODUCER_ID, {"date": today, "rows": rows})
        client.set_paused(PRODUCER_ID, False)
        _say(f"{PRODUCER_ID} is landing {rows} rows for {today} in the landing location...")
        landed = client.wait_for_run(PRODUCER_ID, produced["dag_run_id"])
        if landed["state"] != "success":
            _say(f"{PRODUCER_ID} FAILED; task logs: {stack.airflow_home / 'logs'}")
            return 1
        run = None
        if not conf:
            _say(f"partition landed; waiting for the data set's Asset to start {DAG_ID}")
            run = _asset_triggered_run(client, after=produced.get("queued_at") or "")
        if run is None:
            run = client.trigger(DAG_ID, conf)
            _say(f"triggered {DAG_ID} over the REST API with conf {conf}")
        run_id = run["dag_run_id"]
        _say(f"{DAG_ID} run {run_id}; waiting for it...")
        run_started = time.monotonic()

        def progress(states: dict[str, str]) -> None:
            summary = ", ".join(f"{task}={state}" for task, state in states.items())
            _say(f"  [{time.monotonic() - run_started:5.0f}s] {summary}")

        final = client.wait_for_run(DAG_ID, run_id, on_progress=progress)
        run_seconds = time.monotonic() - run_started
        if final["state"] != "success":
            failed = [
                t["task_id"]
                for t in client.task_instances(DAG_ID, run_id)
                if t["state"] == "failed"
            ]
            _say(f"run {run_id} FAILED at {failed}; task logs: {stack.airflow_home / 'logs'}")
            _say(f"see it in the UI: {stack.airflow_url}/dags/{DAG_ID}/runs/{run_id}")
            return 1
        states = {t["task_id"]: t["state"] for t in client.task_instances(DAG_ID, run_id)}
        if states.get("ingest") == "skipped":
            _say(
                "ingest skipped the run: today's partition was trained on already (run the "
                """demo with --conf '{"force": true}' to retrain on it)"""
            )
        else:
            ingested = client.xcom(DAG_ID, run_id, "ingest")
            docs = client.xcom(DAG_ID, run_id, "validate", key="data_docs")
            _say(f"ingested {ingested}")
            _say("validation (Great Expectations) passed; Data Docs: "
                 f"{page_link(stack.home, str(docs), f'{stack.airflow_url}/ctcd')}")
        endpoint = _serving_endpoint(client, run_id)
        if states.get("promote") == "success":
            _say_batch_run(client, stack, after=final.get("start_date") or "")
        paused = _paused(client)
    finally:
        client.close()
    total = time.monotonic() - started
    _say(f"run {run_id} succeeded in {run_seconds:.0f}s (make demo took {total:.0f}s in all)")
    print()
    if endpoint:
        print(f"Model server:  {endpoint}")
        print("Get a prediction:")
        print(f"  curl -s -X POST {endpoint}/invocations -H 'Content-Type: application/json' \\")
        print(f"       -d '{json.dumps(json.loads(EXAMPLE_REQUEST.read_text()))}'")
    else:
        print(
            "No model server is running: the run deployed nothing (see the deployment_trigger log)."
        )
    print(f"Airflow UI:    {stack.airflow_url}   (login {ADMIN_USER} / {ADMIN_PASSWORD})")
    print(f"Deployments:   {stack.airflow_url}/plugin/deployments   (what serves, health, "
          "actions)")
    print(f"MLflow UI:     {stack.mlflow_url}")
    if paused:
        print(f"Paused DAGs:   {', '.join(paused)}: they run nothing, not even on an Asset "
              "event, until you unpause them in the DAG list (new DAGs start paused).")
    print("Stop it all:   make stop")
    return 0


def _land_scoring(client: AirflowClient, day: str) -> None:
    """Rows to score (today's scoring partition, if not landed yet), then
    ``churn_batch_inference`` unpaused: the promotion's Asset event then scores them, so
    the demo shows the whole loop. (Landed while the DAG is still paused, so the landing
    starts no run before a champion exists; Airflow queues no run for a paused DAG.)"""
    from datetime import date

    from ctcd.data.producer import produce
    from ctcd.data.sources import default_scoring_uri
    from ctcd.data.spec import load_spec
    from ctcd.models import load_model

    dataset = load_model(DEMO_MODEL).dataset
    if not (Path(default_scoring_uri(dataset).removeprefix("file://"))
            / f"date={day}").exists():
        produce(date.fromisoformat(day), SCORING_ROWS, spec=load_spec(dataset),
                purpose="scoring")
        _say(f"landed {SCORING_ROWS} rows to score for {day} in the scoring location")
    client.wait_for_dag(BATCH_DAG_ID)
    client.set_paused(BATCH_DAG_ID, False)
    _say(f"unpaused {BATCH_DAG_ID}: a new champion's Asset event makes it score the "
         "scoring partitions not scored yet (a paused DAG would ignore that event)")


def _say_batch_run(client: AirflowClient, stack: Stack, after: str,
                   timeout: float = 60.0) -> None:
    """Name the batch run the promotion's Asset event started (not waited for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.request("GET", f"/dags/{BATCH_DAG_ID}/dagRuns",
                                  params={"run_type": "asset_triggered"})
        if response.status_code == 200:
            runs = [r for r in response.json()["dag_runs"]
                    if (r.get("queued_at") or "") >= after[:19]]
            if runs:
                _say(f"the promotion started {BATCH_DAG_ID} run {runs[-1]['dag_run_id']}: it "
                     f"scores the new partitions into {stack.home / 'predictions.db'}")
                return
        time.sleep(2)
    _say(f"no {BATCH_DAG_ID} run started within {timeout:.0f}s of the promotion; see the "
         "DAG in the UI")


def _paused(client: AirflowClient) -> list[str]:
    response = client.request("GET", "/dags", params={"paused": "true", "limit": 100})
    if response.status_code != 200:
        return []
    return sorted(d["dag_id"] for d in response.json()["dags"])


def stop(stack: Stack) -> int:
    from ctcd.deployers import get_deployer

    deployer = get_deployer()
    for handle in deployer.find_model_server():
        deployer.stop_model_server(handle.service_id, timeout=30, force=True)
        _say(f"stopped model server {handle.server_name} ({handle.endpoint})")
    stopped = stack.down()
    _say(f"stopped {', '.join(stopped) if stopped else 'nothing (no stack process was running)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctcd.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_cmd = sub.add_parser("demo", help=f"start the stack and run {DAG_ID}")
    demo_cmd.add_argument(
        "--conf", default="{}", help=f"JSON conf: trigger {DAG_ID} with it"
    )
    demo_cmd.add_argument("--rows", type=int, default=20_000, help="rows of the partition")
    up_cmd = sub.add_parser("up", help="start the stack only")
    for command in (demo_cmd, up_cmd):
        command.add_argument(
            "--profile",
            choices=PROFILES,
            default="embedded",
            help="embedded: SQLite + LocalExecutor; scale: PostgreSQL, Redis, CeleryExecutor "
            "with --workers Celery workers",
        )
        command.add_argument("--workers", type=int, default=2, help="Celery workers (scale)")
    sub.add_parser("status", help="show which stack processes run")
    sub.add_parser("stop", help="stop everything the stack started")
    sub.add_parser("clean", help="stop, then delete the scale profile's PostgreSQL cluster")
    args = parser.parse_args(argv)
    if args.command in ("demo", "up"):
        running = Stack()
        if running.profile != args.profile and any(running.status().values()):
            parser.error(
                f"a {running.profile} stack is running in {running.home}; `make stop` it first"
            )
        stack = Stack(profile=args.profile, workers=args.workers)
    else:
        stack = Stack()  # the profile the last `up` recorded
    if args.command == "demo":
        return demo(stack, json.loads(args.conf), rows=args.rows)
    if args.command == "up":
        stack.up()
        _say(
            f"Airflow {stack.airflow_url} (login {ADMIN_USER}/{ADMIN_PASSWORD}), "
            f"MLflow {stack.mlflow_url}"
        )
        return 0
    if args.command == "status":
        print(f"profile        {stack.profile}")
        for name, pid in stack.status().items():
            print(f"{name:14} {'running, pid ' + str(pid) if pid else 'stopped'}")
        return 0
    if args.command == "clean":
        stop(stack)
        stack.postgres.remove()
        _say(f"deleted PostgreSQL cluster {stack.postgres.root}")
        return 0
    return stop(stack)


if __name__ == "__main__":
    sys.exit(main())
