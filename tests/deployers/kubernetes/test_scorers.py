"""Streaming scorers run by the ``kubernetes`` backend through the deployer contract
(:class:`ctcd.deployers.SupportsScorers`), against a real API server and controller manager
(:mod:`.control_plane`), under the documented Role.

The object-level tests check what the API server stored. The end-to-end tests use the test
kubelet, which runs every pod's container for real: each pod is a real
``python -m ctcd.streaming`` process started from the Deployment's environment (ConfigMap,
Secret and the pod name through the downward API, read from the API server), made Ready by
its real ``/readyz`` probe, reading a real ``redis-server`` with a model from a real MLflow
server. Pods are deleted through the API server, gracefully (SIGTERM when the kubelet sees
the deletion) and forced (gone from the API at once, SIGKILLed).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import mlflow
import pytest
import redis
from kubernetes import client as k8s_client
from tests.deployers.kubernetes.clusters import Namespace, needs_test_kubelet
from tests.streaming.scorers import (
    Sender,
    change_champion_while_sending,
    churn_rows,
    freeze_holding,
    outputs,
    wait_until,
)

from ctcd.deployers import ScorerConfig, ScorerNotFound, SupportsScorers, scorers_of
from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.deployers.kubernetes import scorers as ks
from ctcd.deployers.kubernetes.errors import ImagePullFailed
from ctcd.errors import DeploymentError
from ctcd.streaming import localredis

NAME = "ctcd-scorer-churn-scorer"


def _objects(cluster: Namespace, plural: str) -> list[str]:
    return [o["metadata"]["name"] for o in cluster.items(plural)]


def test_a_scorer_is_a_configmap_a_secret_and_a_deployment_found_by_labels(
    cluster: Namespace, make_deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTCD_SCORER_REDIS_URL", "redis://:s3cret@redis.data:6379/0")
    deployer: KubernetesDeployer = make_deployer(cluster)
    scorers = scorers_of(deployer)
    config = ScorerConfig(name="churn-scorer", model_uri="models:/churn@champion",
                          stream="requests", redis_url="redis://:s3cret@redis.data:6379/0",
                          replicas=2, tracking_uri="http://mlflow:5000",
                          options={"batch_size": "64", "min_idle_ms": "5000"})
    info = scorers.deploy_scorer(config, timeout=60)
    assert info.state == "running" and info.backend == "kubernetes"
    assert len(info.replicas) == 2 and info.config == config

    data = cluster.get("configmaps", NAME)["data"]  # type: ignore[index]
    assert data == {"CTCD_SCORER_MODEL_URI": "models:/churn@champion",
                    "CTCD_SCORER_STREAM": "requests", "CTCD_SCORER_GROUP": "ctcd-scorers",
                    "CTCD_SCORER_TRACKING_URI": "http://mlflow:5000",
                    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                    "CTCD_SCORER_BATCH_SIZE": "64", "CTCD_SCORER_MIN_IDLE_MS": "5000"}
    secret = cluster.get("secrets", f"{NAME}-redis")
    assert secret is not None and "s3cret" not in json.dumps(cluster.get("deployments", NAME))
    assert "s3cret" not in json.dumps(data)
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "ctcd.streaming"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CTCD_SCORER_CONSUMER"]["valueFrom"] == {  # as stored: apiVersion defaulted
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env["CTCD_SCORER_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == f"{NAME}-redis"
    assert env["CTCD_SCORER_RELOAD_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{NAME}-redis", "key": "reload-token"}
    token = base64.b64decode(secret["data"]["reload-token"]).decode()
    assert len(token) >= 32 and token not in json.dumps(deployment) + json.dumps(data)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    # Found by labels, among model servers and other scorers; a pure query.
    writes = cluster.writes() if cluster.audit_log else 0
    assert [i.name for i in scorers.find_scorers()] == ["churn-scorer"]
    assert [i.name for i in scorers.find_scorers(stream="requests", name="churn-scorer")] == [
        "churn-scorer"]
    assert scorers.find_scorers(model_uri="models:/other/1") == []
    assert scorers.describe_scorer(info.id).name == "churn-scorer"
    if cluster.audit_log:
        assert cluster.writes() == writes
    assert deployer.find_model_server() == []  # a scorer is not a model server
    with pytest.raises(ScorerNotFound, match="no streaming scorer 'nope'"):
        scorers.describe_scorer("nope")

    # The same config again changes nothing; a changed one is one rolling update, with a
    # dropped option gone from the ConfigMap and the pods' environment.
    generation = deployment["metadata"]["generation"]
    scorers.deploy_scorer(config, timeout=60)
    assert cluster.get("deployments", NAME)["metadata"]["generation"] == generation  # type: ignore[index]
    changed = ScorerConfig(**{**config.to_dict(), "options": {"batch_size": "128"},
                              "replicas": 3})
    assert scorers.deploy_scorer(changed, timeout=60).config == changed
    after = cluster.get("deployments", NAME)
    assert after is not None and after["spec"]["replicas"] == 3
    assert "CTCD_SCORER_MIN_IDLE_MS" not in cluster.get("configmaps", NAME)["data"]  # type: ignore[index]
    names = {e["name"] for e in after["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "CTCD_SCORER_MIN_IDLE_MS" not in names and "CTCD_SCORER_BATCH_SIZE" in names

    # Deployed again from a process without the password: the stored one is kept.
    monkeypatch.delenv("CTCD_SCORER_REDIS_URL")
    scorers.deploy_scorer(ScorerConfig(**{**changed.to_dict(), "replicas": 2}), timeout=60)
    kept = cluster.get("secrets", f"{NAME}-redis")["data"]  # type: ignore[index]
    assert base64.b64decode(kept["url"]).decode() == "redis://:s3cret@redis.data:6379/0"
    # and the reload token the running pods started with
    assert base64.b64decode(kept["reload-token"]).decode() == token

    # Stop scales to zero and remembers the replicas; start brings them back.
    scorers.stop_scorer("churn-scorer", timeout=30)
    assert cluster.get("deployments", NAME)["spec"]["replicas"] == 0  # type: ignore[index]
    stopped = scorers.describe_scorer("churn-scorer")
    assert stopped.state == "stopped" and stopped.desired_state == "stopped"
    assert scorers.find_scorers(running=True) == []
    assert len(scorers.start_scorer("churn-scorer", timeout=60).replicas) == 2
    restarted = scorers.restart_scorer("churn-scorer", timeout=60)
    template = cluster.get("deployments", NAME)["spec"]["template"]  # type: ignore[index]
    assert ks.RESTARTED_AT in template["metadata"]["annotations"]
    assert restarted.state == "running"

    scorers.delete_scorer("churn-scorer", timeout=30)
    assert _objects(cluster, "deployments") == []
    assert _objects(cluster, "configmaps") == []
    assert [s for s in _objects(cluster, "secrets") if s.startswith(NAME)] == []
    assert scorers.find_scorers() == []


def test_a_deployment_that_is_not_a_scorer_is_left_alone(
    cluster: Namespace, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster)
    apps = k8s_client.AppsV1Api(deployer.cluster.kube.hook.api_client)
    apps.create_namespaced_deployment(cluster.namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "x", "image": "x"}]}}}})
    config = ScorerConfig(name="churn-scorer", model_uri="models:/churn/1", stream="s")
    with pytest.raises(DeploymentError, match="exists but is not a ctcd streaming scorer"):
        deployer.deploy_scorer(config, timeout=30)


@needs_test_kubelet
def test_a_failed_rollout_puts_the_previous_settings_back(
    cluster: Namespace, make_deployer: Any
) -> None:
    config = ScorerConfig(name="churn-scorer", model_uri="models:/churn/1", stream="s",
                          tracking_uri="http://mlflow:5000")
    good = scorers_of(make_deployer(cluster))
    good.deploy_scorer(config, timeout=60)
    cluster.kubelet.unpullable.add("broken:1")
    bad = scorers_of(make_deployer(cluster, image="broken:1"))
    changed = ScorerConfig(**{**config.to_dict(), "model_uri": "models:/churn/2"})
    with pytest.raises(ImagePullFailed, match="rolled back to its previous settings"):
        bad.deploy_scorer(changed, timeout=60)
    info = good.describe_scorer("churn-scorer")
    assert info.config == config and info.last_error and "broken:1" in info.last_error
    data = cluster.get("configmaps", NAME)["data"]  # type: ignore[index]
    assert data["CTCD_SCORER_MODEL_URI"] == "models:/churn/1"
    wait_until(lambda: good.describe_scorer("churn-scorer").state == "running", 30,
               "the old pods serving alone again")


# -- end to end: real scorer processes as pods -------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localredis.LocalRedis]:
    server = localredis.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def rclient(redis_server: localredis.LocalRedis) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def pod_scorers(pods_namespace: Namespace, make_deployer: Any) -> Iterator[SupportsScorers]:
    scorers = scorers_of(make_deployer(pods_namespace))
    yield scorers
    for found in scorers.find_scorers():
        scorers.delete_scorer(found.name, timeout=60, force=True)


def _delete_pod(deployer: KubernetesDeployer, name: str, grace: int | None) -> None:
    kwargs: dict[str, Any] = {} if grace is None else {"grace_period_seconds": grace}
    deployer.cluster.kube.core.delete_namespaced_pod(name, deployer.ns, **kwargs)


@pytest.mark.e2e
@needs_test_kubelet
def test_pods_deleted_mid_run_lose_no_request(
    pod_scorers: SupportsScorers, pods_namespace: Namespace, rclient: redis.Redis,
    redis_server: localredis.LocalRedis, churn_model: Any, mlflow_server: str, tmp_path: Path,
) -> None:
    stream = "pods-requests"
    config = ScorerConfig(name="churn-scorer", model_uri=churn_model.uri, stream=stream,
                          redis_url=redis_server.url, replicas=2, tracking_uri=mlflow_server,
                          options={"batch_size": "50", "min_idle_ms": "5000"})
    info = pod_scorers.deploy_scorer(config, timeout=300)
    assert info.state == "running"
    first = sorted(r.consumer for r in info.replicas)
    assert info.model_versions == [churn_model.version]

    sender = Sender(rclient, stream, churn_rows(500)).start()
    try:
        wait_until(lambda: len(outputs(rclient, stream)) >= 200, 180, "the first answers")
        # One pod deleted as Kubernetes does (SIGTERM: it finishes its batch and leaves),
        # one force-deleted (SIGKILL) while it holds delivered, unacknowledged requests:
        # another replica claims them.
        deployer = cast(KubernetesDeployer, pod_scorers)
        _delete_pod(deployer, first[0], grace=None)
        assert pods_namespace.kubelet is not None
        process = pods_namespace.kubelet.pods[first[1]].process
        assert process is not None
        held = freeze_holding(process.pid, rclient, stream, "ctcd-scorers", first[1],
                              attempts=500)
        _delete_pod(deployer, first[1], grace=0)
        wait_until(lambda: _running_pods(pod_scorers, exclude=first) == 2, 300,
                   "two new pods reading the stream")
        sent_then = sender.count()
        wait_until(lambda: sender.count() >= sent_then + 200, 120, "more requests")
    finally:
        ids = sender.stop()
    wait_until(lambda: set(ids) <= {o["input_id"] for o in outputs(rclient, stream)}, 300,
               "every request answered")
    got = outputs(rclient, stream)
    counts = Counter(o["input_id"] for o in got)
    assert set(counts) == set(ids)  # zero lost (and nothing answered that was not sent)
    # At-least-once: a request is answered twice only if a replica was still scoring it
    # when another claimed it (a batch slower than min_idle_ms); with 5 s that is none.
    assert [i for i, n in counts.items() if n > 1] == []
    assert int(rclient.xpending(stream, "ctcd-scorers")["pending"]) == 0
    consumers = {c["name"].decode() for c in rclient.xinfo_consumers(stream, "ctcd-scorers")}
    assert first[0] not in consumers  # left the group on SIGTERM, holding nothing
    # Killed holding entries: the others claimed them, then removed the departed consumer.
    assert held
    wait_until(lambda: first[1] not in {c["name"].decode() for c in rclient.xinfo_consumers(
        stream, "ctcd-scorers")}, 60, "the killed pod's consumer removed from the group")
    by_id = {o["input_id"]: o for o in got}
    assert {by_id[i]["consumer"] for i in held}.isdisjoint({first[1]})  # ...others' answers
    answered_by = Counter(o["consumer"] for o in got)
    assert set(answered_by) - set(first), "the new pods answered nothing"

    lines = list(pod_scorers.get_scorer_logs("churn-scorer", tail=50))
    assert any("ctcd streaming scorer ready" in line for line in lines)
    pod_scorers.stop_scorer("churn-scorer", timeout=60)
    assert pod_scorers.find_scorers(running=True) == []


@pytest.mark.e2e
@needs_test_kubelet
def test_a_new_champion_reaches_the_pods_without_losing_requests(
    pod_scorers: SupportsScorers, rclient: redis.Redis, redis_server: localredis.LocalRedis,
    model_factory: Any, mlflow_server: str,
) -> None:
    old = model_factory(name="churn-k8s-champion", kind="logistic_regression")
    new = model_factory(name="churn-k8s-champion", kind="random_forest")
    mlflow.MlflowClient().set_registered_model_alias(old.name, "champion", old.version)
    stream = "champion-requests"
    config = ScorerConfig(name="champion-scorer", model_uri=f"models:/{old.name}@champion",
                          stream=stream, redis_url=redis_server.url, replicas=2,
                          tracking_uri=mlflow_server,
                          options={"batch_size": "32", "reload_interval": "0"})
    assert pod_scorers.deploy_scorer(config, timeout=300).state == "running"
    figures = change_champion_while_sending(pod_scorers, "champion-scorer", rclient, stream,
                                            model_name=old.name, old=old, new=new)
    assert len(figures["consumers"]) == 2


def _running_pods(scorers: SupportsScorers, exclude: list[str]) -> int:
    info = scorers.describe_scorer("churn-scorer")
    return sum(r.state == "running" and r.consumer not in exclude for r in info.replicas)


@pytest.mark.e2e
@needs_test_kubelet
def test_a_pinned_new_version_rolls_out_without_losing_requests(
    pod_scorers: SupportsScorers, rclient: redis.Redis, redis_server: localredis.LocalRedis,
    model_factory: Any, mlflow_server: str,
) -> None:
    """``models:/NAME/VERSION`` does not follow an alias: a new version is a new config,
    deployed as a rolling update (new pods ready first; old ones finish and leave)."""
    old = model_factory(name="churn-k8s-pinned", kind="logistic_regression")
    new = model_factory(name="churn-k8s-pinned", kind="random_forest")
    stream = "pinned-requests"
    config = ScorerConfig(name="pinned-scorer", model_uri=old.uri, stream=stream,
                          redis_url=redis_server.url, replicas=2, tracking_uri=mlflow_server,
                          options={"batch_size": "32"})
    first = pod_scorers.deploy_scorer(config, timeout=300)

    def roll() -> None:
        info = pod_scorers.deploy_scorer(
            ScorerConfig(**{**config.to_dict(), "model_uri": new.uri}), timeout=300)
        assert info.config.model_uri == new.uri

    figures = change_champion_while_sending(pod_scorers, "pinned-scorer", rclient, stream,
                                            model_name=old.name, old=old, new=new,
                                            change=roll)
    assert len(figures["consumers"]) == 4  # two pods of each version
    assert {r.consumer for r in first.replicas} <= set(figures["consumers"])
