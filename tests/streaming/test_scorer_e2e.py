"""The streaming scorer end to end: real ``redis-server``, real registered models from a real
MLflow server, real scorer processes (``python -m ctcd.streaming``) killed for real."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import pytest
import redis
from tests.oracle import pyfunc_predictions
from tests.streaming.scorers import (
    ScorerProcess,
    churn_rows,
    dead_letters,
    freeze_holding,
    outputs,
    start_scorer,
    wait_until,
)

from ctcd.streaming.client import send
from ctcd.streaming.localredis import LocalRedis
from ctcd.streaming.settings import heartbeat_key

pytestmark = pytest.mark.e2e


@pytest.fixture
def scorers() -> Any:
    started: list[ScorerProcess] = []
    yield started
    for scorer in started:
        scorer.cleanup()


def _pending(client: redis.Redis, stream: str) -> int:
    return int(client.xpending(stream, "scorers")["pending"])


def test_scores_every_request_once_with_the_version_that_answered(
    tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    churn_model: Any, scorers: list[ScorerProcess],
) -> None:
    rows = churn_rows(300)
    ids = send(rclient, stream, rows, keys=[f"customer-{i}" for i in range(len(rows))])
    scorer = start_scorer(tmp_path, redis_server.url, stream, churn_model.uri, "a",
                          batch_size=64)
    scorers.append(scorer)
    scorer.wait_ready()
    wait_until(lambda: _scored(rclient, stream) >= len(rows), 120, "300 predictions",
               scorer.text)

    got = outputs(rclient, stream)
    assert [o["input_id"] for o in got] == ids  # one each, in order (one scorer)
    assert {o["model_name"] for o in got} == {churn_model.name}
    assert {o["model_version"] for o in got} == {churn_model.version}
    assert [o["key"] for o in got] == [f"customer-{i}" for i in range(len(rows))]
    assert [o["prediction"] for o in got] == pyfunc_predictions(churn_model.uri, rows)
    assert _pending(rclient, stream) == 0
    assert dead_letters(rclient, stream) == []

    key = heartbeat_key(stream, "scorers", "a")
    wait_until(lambda: b'"scored": 300' in (rclient.get(key) or b""), 30, "the heartbeat",
               scorer.text)
    assert scorer.terminate() == 0
    assert rclient.get(key) is None  # says goodbye


@pytest.mark.parametrize("kind", ["xgboost-regression", "lightgbm-multiclass"])
def test_other_flavors_and_tasks_are_scored_with_mlflows_answers(
    kind: str, tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    flavored_model: Any, scorers: list[ScorerProcess],
) -> None:
    """An XGBoost regressor's float32 answers reach the output in full (the exact value,
    as the model server's JSON writes it); a LightGBM classifier's labels as integers.
    Compared with MLflow's own loader (tests/flavored_models.py), not the scorer's."""
    model = flavored_model(kind)
    frame = model.frame
    ids = send(rclient, stream, frame.to_dict(orient="records"))
    scorer = start_scorer(tmp_path, redis_server.url, stream, model.uri, "a", batch_size=16)
    scorers.append(scorer)
    scorer.wait_ready()
    wait_until(lambda: _scored(rclient, stream) >= len(ids), 120, "the predictions",
               scorer.text)
    got = outputs(rclient, stream)
    assert [o["input_id"] for o in got] == ids
    assert [o["prediction"] for o in got] == model.expected(frame).tolist()
    assert dead_letters(rclient, stream) == []


def test_malformed_requests_are_dead_lettered_with_the_field_named(
    tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    churn_model: Any, scorers: list[ScorerProcess],
) -> None:
    good = churn_rows(3)
    too_old = {**good[0], "age": 400}
    bad_fields: list[tuple[str, dict[bytes | str, Any]]] = [
        ("data: not valid JSON", {"data": b"{not json"}),
        ("data: expected a JSON object of feature values, got a JSON array", {"data": b"[1]"}),
        ("data.age: missing", {"data": _json({k: v for k, v in good[0].items() if k != "age"})}),
        ("data.colour: unexpected field", {"data": _json({**good[0], "colour": "red"})}),
        ("data.age: expected an integer (long), got str 'old'",
         {"data": _json({**good[0], "age": "old"})}),
        ("data.contract: is null but required", {"data": _json({**good[0], "contract": None})}),
        ("data.age: 400 is above the maximum 110 of data set 'churn'", {"data": _json(too_old)}),
        ("region: unexpected field; a request has 'data'", {"region": "north"}),
    ]
    pipe = rclient.pipeline()
    pipe.xadd(stream, {"data": _json(good[0])})
    for _, fields in bad_fields:
        pipe.xadd(stream, fields)
    pipe.xadd(stream, {"data": _json(good[1])})
    pipe.xadd(stream, {"data": _json(good[2]), "key": "last"})
    ids = [i.decode() for i in pipe.execute()]
    scorer = start_scorer(tmp_path, redis_server.url, stream, churn_model.uri, "a",
                          dataset="churn")
    scorers.append(scorer)
    scorer.wait_ready()
    wait_until(lambda: len(dead_letters(rclient, stream)) >= len(bad_fields)
               and _scored(rclient, stream) >= 3, 120, "dead letters", scorer.text)

    by_input = {d["input_id"]: d for d in dead_letters(rclient, stream)}
    assert sorted(by_input) == sorted(ids[1:-2])
    dead = [by_input[i] for i in ids[1:-2]]
    for (reason, _), letter in zip(bad_fields, dead, strict=True):
        assert letter["reason"].startswith(reason), letter["reason"]
        assert letter["model_version"] == churn_model.version
    assert '"{not json"' in dead[0]["fields"]  # the request as sent, to inspect or replay
    scored = outputs(rclient, stream)
    assert [o["input_id"] for o in scored] == [ids[0], ids[-2], ids[-1]]
    assert [o["prediction"] for o in scored] == pyfunc_predictions(churn_model.uri, good)
    assert _pending(rclient, stream) == 0  # dead letters are acknowledged too


def test_a_request_that_keeps_failing_is_dead_lettered_after_max_deliveries(
    tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    churn_model: Any, scorers: list[ScorerProcess],
) -> None:
    rclient.xgroup_create(stream, "scorers", id="0", mkstream=True)
    poison, fine = send(rclient, stream, churn_rows(2))
    # A consumer that takes the entry and dies each time, four times over.
    rclient.xreadgroup("scorers", "crashing", {stream: ">"}, count=1)
    for _ in range(3):
        rclient.xclaim(stream, "scorers", "crashing", min_idle_time=0, message_ids=[poison])
    scorer = start_scorer(tmp_path, redis_server.url, stream, churn_model.uri, "a",
                          max_deliveries=3, min_idle_ms=500)
    scorers.append(scorer)
    scorer.wait_ready()
    wait_until(lambda: dead_letters(rclient, stream) and outputs(rclient, stream)
               and _pending(rclient, stream) == 0, 120, "the poison entry", scorer.text)

    [letter] = dead_letters(rclient, stream)
    assert letter["input_id"] == poison
    assert letter["reason"].startswith("delivered 5 times without being acknowledged")
    assert [o["input_id"] for o in outputs(rclient, stream)] == [fine]


def test_a_scorer_killed_mid_batch_loses_nothing(
    tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    churn_model: Any, scorers: list[ScorerProcess],
) -> None:
    rows = churn_rows(10_000)
    ids = send(rclient, stream, rows)
    first = start_scorer(tmp_path, redis_server.url, stream, churn_model.uri, "first",
                         batch_size=250)
    scorers.append(first)
    first.wait_ready()
    wait_until(lambda: _scored(rclient, stream) >= 1000, 120, "first predictions",
               first.text)
    held = len(freeze_holding(first.proc.pid, rclient, stream, "scorers", "first"))
    first.kill()  # SIGKILL while it holds `held` delivered, unacknowledged entries
    assert held > 0
    done_before = _scored(rclient, stream)
    assert done_before < len(rows), "the first scorer finished before it could be killed"

    second = start_scorer(tmp_path, redis_server.url, stream, churn_model.uri, "second",
                          batch_size=250, min_idle_ms=1000)
    scorers.append(second)
    second.wait_ready()
    wait_until(lambda: _all_acknowledged(rclient, stream), 180, "every request answered",
               second.text)

    got = outputs(rclient, stream)
    assert {o["input_id"] for o in got} == set(ids)  # no loss
    assert len(got) >= len(ids)  # duplicates are allowed (at-least-once), loss is not
    by_consumer = Counter(o["consumer"] for o in got)
    assert by_consumer["first"] > 0 and by_consumer["second"] > 0
    # The second took over the first's pending entries (its log line may trail the outputs
    # it wrote, so wait for it).
    deadline = time.monotonic() + 30
    while "claimed" not in second.text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "claimed" in second.text()
    # ...and, once nothing the first held is pending, removed it from the group.
    wait_until(lambda: "removed departed consumer first" in second.text(), 60,
               "the killed consumer removed", second.text)
    assert "first" not in _consumers(rclient, stream)
    # Every answer is the model's, whoever gave it.
    expected = dict(zip(ids, pyfunc_predictions(churn_model.uri, rows), strict=True))
    assert all(o["prediction"] == expected[o["input_id"]] for o in got)


def test_a_restarted_scorer_first_finishes_its_own_pending_entries(
    tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    churn_model: Any, scorers: list[ScorerProcess],
) -> None:
    ids = send(rclient, stream, churn_rows(10_000))
    first = start_scorer(tmp_path, redis_server.url, stream, churn_model.uri, "same",
                         batch_size=250)
    scorers.append(first)
    first.wait_ready()
    wait_until(lambda: _scored(rclient, stream) >= 1000, 120, "first predictions",
               first.text)
    assert freeze_holding(first.proc.pid, rclient, stream, "scorers", "same")
    first.kill()

    # Same consumer name, claiming disabled in practice (an hour of idle time): only its
    # own history read can bring the entries it held back.
    again = start_scorer(tmp_path / "again", redis_server.url, stream, churn_model.uri, "same",
                         batch_size=250, min_idle_ms=3_600_000)
    scorers.append(again)
    again.wait_ready()
    wait_until(lambda: _all_acknowledged(rclient, stream), 180, "every request answered",
               again.text)
    assert "re-scoring" in again.text()
    assert {o["input_id"] for o in outputs(rclient, stream)} == set(ids)


def test_two_scorers_share_one_stream(
    tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    churn_model: Any, scorers: list[ScorerProcess],
) -> None:
    a = start_scorer(tmp_path, redis_server.url, stream, churn_model.uri, "a", batch_size=50)
    b = start_scorer(tmp_path, redis_server.url, stream, churn_model.uri, "b", batch_size=50)
    scorers.extend([a, b])
    a.wait_ready()
    b.wait_ready()
    ids: list[str] = []
    for _ in range(10):  # bursts, each waiting in the stream for whichever scorer is free
        ids += send(rclient, stream, churn_rows(200))
    wait_until(lambda: _scored(rclient, stream) >= len(ids), 180, "every prediction",
               lambda: a.text() + b.text())

    got = outputs(rclient, stream)
    assert sorted(o["input_id"] for o in got) == sorted(ids)  # each exactly once
    by_consumer = Counter(o["consumer"] for o in got)
    assert set(by_consumer) == {"a", "b"}, by_consumer


def test_a_new_champion_is_picked_up_between_batches_without_loss(
    tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    model_factory: Any, scorers: list[ScorerProcess],
) -> None:
    v1 = model_factory(name="churn-stream", kind="logistic_regression")
    v2 = model_factory(name="churn-stream", kind="random_forest")
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("churn-stream", "champion", v1.version)
    scorer = start_scorer(tmp_path, redis_server.url, stream, "models:/churn-stream@champion",
                          "a", reload_interval=0)  # only SIGHUP makes it look
    scorers.append(scorer)
    scorer.wait_ready()
    rows = churn_rows(400)
    before = send(rclient, stream, rows[:200])
    wait_until(lambda: _scored(rclient, stream) >= 200, 120, "v1 predictions",
               scorer.text)

    client.set_registered_model_alias("churn-stream", "champion", v2.version)
    scorer.signal(signal.SIGHUP)
    wait_until(lambda: f"now scoring with churn-stream version {v2.version}" in scorer.text(),
               120, "the swap", scorer.text)
    after = send(rclient, stream, rows[200:])
    wait_until(lambda: _scored(rclient, stream) >= 400, 120, "v2 predictions",
               scorer.text)

    got = {o["input_id"]: o for o in outputs(rclient, stream)}
    assert set(got) == set(before + after)
    assert {got[i]["model_version"] for i in before} == {v1.version}
    assert {got[i]["model_version"] for i in after} == {v2.version}
    expected = pyfunc_predictions(v2.uri, rows[200:])
    assert [got[i]["prediction"] for i in after] == expected


def _consumers(client: redis.Redis, stream: str) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(stream, "scorers")}


def _scored(client: redis.Redis, stream: str) -> int:
    return int(client.xlen(f"{stream}:predictions"))


def _all_acknowledged(client: redis.Redis, stream: str) -> bool:
    """Every entry delivered to the group (lag 0) and acknowledged (none pending): each
    then has its output or dead letter, written in the transaction that acknowledged it."""
    [group] = client.xinfo_groups(stream)
    return group["lag"] == 0 and group["pending"] == 0


def _json(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
