"""The embedded stack for real: Airflow 3 (api-server, scheduler, dag-processor, triggerer)
and MLflow as processes in a temporary home, driven only through the REST API v2.

One continuous_training run trains, deploys and promotes a champion; its ``promote`` event
starts ``batch_inference``, which scores the scoring partitions landed before it into the
default SQLite predictions database; a producer's scoring Asset event then starts a run that
scores exactly the partition it names."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from tests.docs.snippets import block, run
from tests.oracle import pyfunc_predictions, request_rows
from tests.stack.support import (
    post_asset_event,
    query,
    running_stack,
    unpaused,
    wait_for_asset_run,
)

from ctcd.data.producer import produce
from ctcd.data.spec import load_spec
from ctcd.settings import PROJECT_ROOT, Settings
from ctcd.stack.airflow_api import AirflowClient
from ctcd.stack.embedded import Stack

pytestmark = pytest.mark.e2e
DAG_ID = "churn_training"  # generated from include/models/churn.yaml
BATCH_DAG_ID = "churn_batch_inference"
SERVING_URI = "ctcd://models/churn-classifier"
SCORING_URI = "ctcd://datasets/churn/scoring"
EXAMPLE_REQUEST = PROJECT_ROOT / "include" / "examples" / "churn_request.json"
TODAY = datetime.now(UTC).date()
SCORING_DAYS = {TODAY - timedelta(days=2): 600, TODAY - timedelta(days=1): 400}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[AirflowClient]:
    with unpaused(stack, DAG_ID) as client:
        yield client


def test_token_is_required(stack: Stack) -> None:
    response = httpx.get(f"{stack.airflow_url}/api/v2/dags/{DAG_ID}")
    assert response.status_code == 401


def _scoring_uri(stack: Stack) -> str:
    return f"file://{stack.home / 'scoring' / 'churn'}/"


def _land_scoring(stack: Stack, day: date, rows: int) -> Any:
    return produce(day, rows, spec=load_spec("churn"), labels=False,
                   landing_uri=_scoring_uri(stack))


@pytest.fixture(scope="module")
def trained(client: AirflowClient, stack: Stack) -> dict[str, Any]:
    """Scoring partitions landed and the churn model's batch DAG unpaused, then one run of its
    training DAG, triggered over the REST API with a conf override, waited to its end."""
    for day, rows in SCORING_DAYS.items():
        _land_scoring(stack, day, rows)
    client.wait_for_dag(BATCH_DAG_ID)
    client.set_paused(BATCH_DAG_ID, False)
    landing = f"file://{stack.home / 'landing' / 'churn'}/"
    produce(TODAY, 4_000, spec=load_spec("churn"), landing_uri=landing)
    run = client.trigger(
        DAG_ID,
        {
            "estimator": "logistic_regression",
            "threshold": 0.7,
            "strategy": "replace",
        },
    )
    final = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=900)
    return {**final, "triggered": run,
            "task_instances": client.task_instances(DAG_ID, run["dag_run_id"])}


@pytest.fixture(scope="module")
def champion_batch(trained: dict[str, Any], client: AirflowClient) -> dict[str, Any]:
    """The batch DAG's run that promote's serving Asset event started, waited to its end."""
    assert trained["state"] == "success"
    found = wait_for_asset_run(client, BATCH_DAG_ID, SERVING_URI, timeout=300)
    final = client.wait_for_run(BATCH_DAG_ID, found["dag_run_id"], timeout=900)
    return {**final, "events": found["events"]}


def _states(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in client.task_instances(dag_id, run_id):
        states.setdefault(ti["task_id"], []).append(ti["state"])
    return states


def test_triggered_run_with_conf_override_trains_deploys_and_serves(
    client: AirflowClient, stack: Stack, trained: dict[str, Any]
) -> None:
    run = trained["triggered"]
    assert run["conf"]["estimator"] == "logistic_regression"
    states = {ti["task_id"]: ti["state"] for ti in trained["task_instances"]}
    assert trained["state"] == "success", states

    handle = client.xcom(DAG_ID, run["dag_run_id"], "deploy")
    data = handle["__data__"]
    assert handle["__classname__"] == "ctcd.services.handle.ServiceHandle"
    assert data["run_id"] == run["dag_run_id"] and data["task_id"] == "deploy"
    response = httpx.post(f"{data['endpoint']}/invocations", content=EXAMPLE_REQUEST.read_bytes(),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == data["model_version"]
    assert response.json()["predictions"] == _example_answers(stack, data)
    # The deferred start was recorded pending, then completed when the operator saw it ready.
    from ctcd.deployers.local.deployer import LocalDeployer

    start = LocalDeployer(Settings(home=stack.home)).history(data["service_id"])[-1]  # first
    assert (start.strategy, start.outcome) == ("start", "succeeded")
    assert start.seconds_to_serving is not None and start.seconds_to_serving > 0

    evaluation = client.xcom(DAG_ID, run["dag_run_id"], "evaluate")
    assert evaluation["metric"] == "roc_auc" and evaluation["candidate"]["roc_auc"] >= 0.7


def test_out_of_range_param_is_refused_at_trigger_naming_it(client: AirflowClient) -> None:
    response = client.request(
        "POST", f"/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": {"holdout_fraction": 7}}
    )
    assert response.status_code == 400
    assert "holdout_fraction" in response.text


def test_unknown_param_fails_the_first_task_naming_it(client: AirflowClient, stack: Stack) -> None:
    from ctcd.deployers.local.deployer import LocalDeployer

    before = [h.model_version for h in LocalDeployer(Settings(home=stack.home)).find_model_server()]
    run = client.trigger(DAG_ID, {"min_roc_aucc": 0.9})
    final = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=600)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run["dag_run_id"])}
    assert final["state"] == "failed"
    assert states["ingest"] == "failed"
    assert states["train"] == "upstream_failed" and states["deploy"] == "upstream_failed"
    log = client.task_log(DAG_ID, run["dag_run_id"], "ingest")
    assert "unknown parameter 'min_roc_aucc'" in log
    after = [h.model_version for h in LocalDeployer(Settings(home=stack.home)).find_model_server()]
    assert after == before


def test_promote_event_starts_batch_inference_scoring_with_the_events_version(
    client: AirflowClient, stack: Stack, trained: dict[str, Any], champion_batch: dict[str, Any]
) -> None:
    registered = client.xcom(DAG_ID, trained["dag_run_id"], "register")
    run_id = champion_batch["dag_run_id"]
    assert champion_batch["run_type"] == "asset_triggered"
    assert champion_batch["state"] == "success", _states(client, BATCH_DAG_ID, run_id)
    [event] = [e for e in champion_batch["events"] if e["uri"] == SERVING_URI]
    assert (event["source_dag_id"], event["source_task_id"], event["source_run_id"]) == (
        DAG_ID, "promote", trained["dag_run_id"])
    assert event["extra"]["model_name"] == registered["model_name"]
    assert event["extra"]["version"] == registered["version"]

    rows = query(stack.home / "predictions.db",
                 "SELECT partition_date, COUNT(*), MIN(model_name), MAX(model_name), "
                 "MIN(model_version), MAX(model_version), MIN(dag_run_id), MAX(dag_run_id), "
                 "MIN(scored_at), MAX(scored_at) FROM predictions GROUP BY 1 ORDER BY 1")
    by_day = {date.fromisoformat(r[0]): r for r in rows}
    # Only a 02:00 UTC run of the daily schedule, if it fell before this one, scored them first.
    earlier = {d for d, r in by_day.items() if r[6].startswith("scheduled__")}
    expected = sorted(d for d in SCORING_DAYS if d not in earlier)
    planned = client.xcom(BATCH_DAG_ID, run_id, "plan")
    assert planned["version"] == event["extra"]["version"]
    assert planned["partitions"] == [d.isoformat() for d in expected]
    assert client.xcom(BATCH_DAG_ID, run_id, "report")["scored"] == sum(
        SCORING_DAYS[d] for d in expected)
    started = datetime.fromisoformat(event["timestamp"])
    ended = datetime.fromisoformat(champion_batch["end_date"])
    for day in expected:
        _, count, *names, v_lo, v_hi, r_lo, r_hi, t_lo, t_hi = by_day[day]
        assert count == SCORING_DAYS[day]
        assert set(names) == {registered["model_name"]}
        assert {v_lo, v_hi} == {registered["version"]} and {r_lo, r_hi} == {run_id}
        assert started <= datetime.fromisoformat(t_lo) <= datetime.fromisoformat(t_hi) <= ended


def test_a_landed_scoring_partition_starts_a_run_that_scores_exactly_it(
    client: AirflowClient, stack: Stack, champion_batch: dict[str, Any]
) -> None:
    assert champion_batch["state"] == "success"
    quiet = TODAY - timedelta(days=5)
    _land_scoring(stack, quiet, 100)  # landed without an event: not this run's business
    landed = _land_scoring(stack, TODAY, 300)
    post_asset_event(client, SCORING_URI, {"date": TODAY.isoformat(),
                                           "partition": landed.partition, "rows": landed.rows})
    found = wait_for_asset_run(client, BATCH_DAG_ID, SCORING_URI, timeout=300,
                               exclude={champion_batch["dag_run_id"]})
    run_id = found["dag_run_id"]
    final = client.wait_for_run(BATCH_DAG_ID, run_id, timeout=900)
    states = _states(client, BATCH_DAG_ID, run_id)
    assert final["state"] == "success", states
    assert [e["extra"]["date"] for e in found["events"]] == [TODAY.isoformat()]
    assert client.xcom(BATCH_DAG_ID, run_id, "plan")["partitions"] == [TODAY.isoformat()]
    assert states["score_partition"] == ["success"]  # one mapped task: that partition

    db = stack.home / "predictions.db"
    assert query(db, "SELECT partition_date, COUNT(*) FROM predictions WHERE dag_run_id = ? "
                     "GROUP BY 1", run_id) == [(TODAY.isoformat(), 300)]
    assert query(db, "SELECT COUNT(*) FROM predictions WHERE partition_date = ?",
                 TODAY.isoformat()) == [(300,)]
    # each row's answer is the one MLflow's own loader gives with the version that scored it
    [(name, version)] = query(db, "SELECT DISTINCT model_name, model_version FROM predictions "
                                  "WHERE dag_run_id = ?", run_id)
    scored = dict(query(db, "SELECT row_id, prediction FROM predictions WHERE dag_run_id = ?",
                        run_id))
    rows = pd.read_parquet(landed.partition)
    features = rows[list(load_spec("churn").feature_names)]
    want = pyfunc_predictions(f"models:/{name}/{version}", features,
                              tracking_uri=stack.mlflow_url)
    assert [scored[i] for i in rows["customer_id"]] == want


# -- the documentation's commands, as a reader runs them after `make demo` ---------------------
DEMO_AIRFLOW, DEMO_SERVER = "http://127.0.0.1:8080", "http://127.0.0.1:8100"


def _example_answers(stack: Stack, served: dict[str, Any]) -> list[Any]:
    """MLflow's own loader's answers to the example request, with the served version."""
    rows = request_rows(json.loads(EXAMPLE_REQUEST.read_text()))
    return pyfunc_predictions(f"models:/{served['model_name']}/{served['model_version']}",
                              rows, tracking_uri=stack.mlflow_url)


def _served(client: AirflowClient, trained: dict[str, Any]) -> dict[str, Any]:
    assert trained["state"] == "success"
    return dict(client.xcom(DAG_ID, trained["dag_run_id"], "deploy")["__data__"])


def _answered(endpoint: str) -> int:
    """Requests the server answered with 200, from its (open) Prometheus metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{endpoint}/metrics").raise_for_status().text
    return round(sum(sample.value for family in text_string_to_metric_families(text)
                     for sample in family.samples
                     if sample.name == "ctcd_model_requests_total"
                     and sample.labels.get("status") == "200"))


def test_first_prediction_page_runs_as_written(
    client: AirflowClient, stack: Stack, trained: dict[str, Any]
) -> None:
    page = "getting-started/first-prediction.md"
    served = _served(client, trained)
    predict = run(block(page, "/invocations"), {DEMO_SERVER: served["endpoint"]})
    assert predict.returncode == 0, predict.stderr
    assert json.loads(predict.stdout)["predictions"] == _example_answers(stack, served)

    trigger = run(block(page, "/dagRuns"), {DEMO_AIRFLOW: stack.airflow_url})
    assert trigger.returncode == 0, trigger.stderr
    triggered = json.loads(trigger.stdout)
    assert triggered["conf"] == {"estimator": "random_forest", "threshold": 0.8}
    final = client.wait_for_run(DAG_ID, triggered["dag_run_id"], timeout=900)
    states = _states(client, DAG_ID, triggered["dag_run_id"])
    # today's partition was trained on already: the page's run ends at ingest, as the
    # getting-started page says a second `make demo` of the day does
    assert final["state"] == "success" and states["ingest"] == ["skipped"], states


def test_own_model_page_trains_deploys_and_serves_the_diabetes_model(
    client: AirflowClient, stack: Stack, trained: dict[str, Any]
) -> None:
    """docs/how-to/own-model.md's commands: land a diabetes partition, trigger its generated
    training DAG over the REST API (the model's own LightGBM trainer), then call the server
    it deployed; the answer is the registered model's own (the MLflow pyfunc oracle)."""
    import mlflow
    import pandas as pd

    page, dag_id = "how-to/own-model.md", "diabetes_training"
    client.wait_for_dag(dag_id)
    client.set_paused(dag_id, False)
    result = run(block(page, "diabetes_training/dagRuns"), {DEMO_AIRFLOW: stack.airflow_url},
                 env={"CTCD_HOME": str(stack.home)})
    assert result.returncode == 0, result.stderr
    triggered = json.loads(result.stdout.strip().splitlines()[-1])
    assert triggered["conf"] == {"hyperparameters": {"n_estimators": 400}}
    final = client.wait_for_run(dag_id, triggered["dag_run_id"], timeout=900)
    states = _states(client, dag_id, triggered["dag_run_id"])
    assert final["state"] == "success" and states["promote"] == ["success"], states
    handle = client.xcom(dag_id, triggered["dag_run_id"], "deploy")["__data__"]
    predict = run(block(page, "dataframe_records"), {DEMO_SERVER: handle["endpoint"]})
    assert predict.returncode == 0, predict.stderr
    [answer] = json.loads(predict.stdout)["predictions"]
    row = pd.DataFrame([{"age": 50, "sex": 1, "bmi": 27.1, "bp": 95.0, "s1": 190.0,
                         "s2": 115.0, "s3": 50.0, "s4": 4.0, "s5": 4.6, "s6": 91.0}])
    from ctcd.tracking import Tracking

    with Tracking(stack.mlflow_url).active():  # the stack's server, tracking and registry
        oracle = mlflow.pyfunc.load_model(handle["model_uri"]).predict(row)
    assert answer == pytest.approx(float(oracle[0]), rel=1e-6)


def test_retrain_on_drift_snippet_sends_its_drifted_rows(
    client: AirflowClient, trained: dict[str, Any]
) -> None:
    endpoint = _served(client, trained)["endpoint"]
    before = _answered(endpoint)
    result = run(block("how-to/retrain-on-drift.md", "generate_snapshot"),
                 {DEMO_SERVER: endpoint})
    assert result.returncode == 0, result.stderr
    assert _answered(endpoint) - before == 20  # 1,000 rows in requests of 50


def test_ctcd_predict_commands_run_as_written(
    client: AirflowClient, stack: Stack, trained: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from ctcd.data.churn import generate_snapshot

    registered = client.xcom(DAG_ID, trained["dag_run_id"], "register")
    version = registered["version"]
    # promote moved the alias to champion; the page's second command scores a challenger
    # (both URIs explicit: mlflow's global registry URI may name another test's server)
    MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url
                 ).set_registered_model_alias(registered["model_name"], "challenger", version)
    frame = generate_snapshot(TODAY, rows=2_000, spec=load_spec("churn"))
    frame.to_parquet(tmp_path / "customers.parquet", index=False)
    frame.to_csv(tmp_path / "customers.csv", index=False)
    script = block("how-to/batch-scoring.md", "ctcd predict --model")
    result = run(script, {"churn-classifier/3": f"churn-classifier/{version}"}, cwd=tmp_path,
                 env={"MLFLOW_TRACKING_URI": stack.mlflow_url,
                      "MLFLOW_REGISTRY_URI": stack.mlflow_url})
    assert result.returncode == 0, result.stdout + result.stderr
    scored = pd.read_parquet(tmp_path / "customers.parquet.predictions.parquet")
    assert len(scored) == 2_000 and set(scored["model_version"]) == {str(version)}
    want = pyfunc_predictions(f"models:/{registered['model_name']}/{version}",
                              frame[list(load_spec("churn").feature_names)],
                              tracking_uri=stack.mlflow_url)
    assert scored["prediction"].tolist() == want
    # the challenger's (the same version), as CSV
    assert pd.read_csv(tmp_path / "scored.csv")["prediction"].tolist() == want


def test_make_demo_on_the_running_stack_prints_a_curl_that_answers(
    client: AirflowClient, stack: Stack, trained: dict[str, Any]
) -> None:
    """The getting-started page's `make demo` (the Makefile's demo recipe runs
    `python -m ctcd.stack demo`), run again on this stack as a second demo of the day is:
    it reuses the stack, lands today's partition, its run skips at ingest (trained on
    already), and the curl it prints gets predictions from the champion."""
    assert "make demo" in block("getting-started/index.md", "make demo")
    recipe = (PROJECT_ROOT / "Makefile").read_text().split("\ndemo: ", 1)[1].split("\n\n")[0]
    assert "-m ctcd.stack demo" in recipe
    assert trained["state"] == "success"
    demo = run(f"{sys.executable} -m ctcd.stack demo", timeout=900, env={
        "CTCD_HOME": str(stack.home), "CTCD_AIRFLOW_PORT": str(stack.ports.airflow),
        "CTCD_MLFLOW_PORT": str(stack.ports.mlflow)})
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "ingest skipped the run: today's partition was trained on already" in demo.stdout
    # It says which DAGs stay paused, and the churn model's batch DAG is not one of them,
    # so a promotion's Asset event scores what was landed to score.
    assert f"unpaused {BATCH_DAG_ID}: a new champion's Asset event" in demo.stdout
    [paused] = [line for line in demo.stdout.splitlines() if line.startswith("Paused DAGs:")]
    assert "model_server_ops" in paused and BATCH_DAG_ID not in paused and DAG_ID not in paused
    assert (stack.home / "scoring" / "churn" / f"date={TODAY.isoformat()}").is_dir()
    printed = demo.stdout.split("Get a prediction:\n", 1)[1].split("\nAirflow UI:", 1)[0]
    answer = run(printed)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["predictions"] == _example_answers(
        stack, _served(client, trained))


def test_streaming_scorer_snippet_scores_the_request_it_adds(
    client: AirflowClient, stack: Stack, trained: dict[str, Any], tmp_path: Path
) -> None:
    """docs/how-to/streaming.md's scorer, XADD and XRANGE, on a private redis-server, with
    the champion this module trained."""
    import os
    import signal
    import subprocess
    import time

    from ctcd.streaming import localredis

    assert trained["state"] == "success"
    script = block("how-to/streaming.md", "python -m ctcd.streaming --model-uri")
    scorer, add, read = re.split(r"\n(?=redis-cli )", script.strip())
    redis_server = localredis.start(tmp_path / "redis")
    cli = {"redis-cli ": f"redis-cli -p {redis_server.port} "}
    env = {**os.environ, "MLFLOW_TRACKING_URI": stack.mlflow_url,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "scorer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", scorer.replace("redis://127.0.0.1:6379/0", redis_server.url)],
            env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        added = run(add, cli)
        assert added.returncode == 0, added.stderr
        deadline = time.monotonic() + 180
        while True:
            answered = run(read, cli)
            if "prediction" in answered.stdout or time.monotonic() > deadline:
                break
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        assert "order-17" in answered.stdout and "churn-classifier" in answered.stdout, (
            answered.stdout)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        redis_server.stop()
