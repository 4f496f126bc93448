"""Each strategy under continuous client load against one real model server: zero failed
requests when the new version is good; automatic rollback, old version still answering,
when it is not (cannot load, crashes on warm-up, errors under traffic)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.deployers.conftest import Load

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.errors import RolledBack, ShadowAwaitingDecision, ShadowDropped, VersionRejected
from ctcd.services import ServiceHandle

pytestmark = pytest.mark.e2e
MODEL = "churn-strategies"


@pytest.fixture(scope="module")
def serving(module_deployer: LocalDeployer, model_factory: Any) -> ServiceHandle:
    first = model_factory(name=MODEL, kind="logistic_regression")
    return module_deployer.deploy_model(
        DeploymentConfig(model_name=MODEL, model_uri=first.uri, model_version=first.version),
        timeout=180,
    )


def _serving_version(deployer: LocalDeployer, handle: ServiceHandle) -> dict[str, float]:
    with deployer.admin(handle.service_id) as admin:
        return admin.serving()


def _report(name: str, load: Load, seconds: float | None) -> None:
    took = "-" if seconds is None else f"{seconds:.2f}s"
    print(f"\nSTRATEGY {name}: sent={load.sent} failed={load.failed} "
          f"deploy->new version serving={took} versions={dict(load.versions)}")


@pytest.mark.parametrize(
    "strategy",
    [
        "replace",
        {"name": "blue_green", "verify_seconds": 2},
        {"name": "canary", "steps": [0.2, 0.5], "interval_seconds": 1.5, "max_error_rate": 0.0},
    ],
    ids=["replace", "blue_green", "canary"],
)
def test_strategy_under_load_drops_no_request(
    strategy: Any, module_deployer: LocalDeployer, serving: ServiceHandle, model_factory: Any,
    churn_model: Any, load: Any,
) -> None:
    new = model_factory(name=MODEL, kind="logistic_regression")
    traffic = load(serving.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 20)
    started = time.monotonic()
    handle = module_deployer.deploy_model(
        DeploymentConfig(model_name=MODEL, model_uri=new.uri, model_version=new.version),
        strategy=strategy,
    )
    returned = time.monotonic()
    # Requests already in flight when the deploy returned may still answer with the old
    # version (a canary has been serving the new one for a while, so counting from 0 would
    # not wait for them): let a few more new-version answers arrive, then take the snapshot.
    at_return = traffic.versions[new.version]
    traffic.wait_for(lambda t: t.versions[new.version] >= max(20, at_return + 5))
    after_switch = traffic.versions.copy()
    traffic.wait_for(lambda t: t.versions[new.version] >= after_switch[new.version] + 20)
    traffic.stop()

    _report(handle.strategy or "?", traffic, traffic.first_seen[new.version] - started)
    assert traffic.failed == 0, traffic.failures[:5]
    assert handle.model_version == new.version and handle.endpoint == serving.endpoint
    assert _serving_version(module_deployer, handle) == {new.version: 1.0}
    # once the deploy returned, only the new version answers
    old = [v for v in after_switch if v != new.version]
    assert all(traffic.versions[v] == after_switch[v] for v in old)
    assert returned - started < 60
    if handle.strategy == "canary":  # both versions answered while the canary ran
        assert len(after_switch) >= 2


def _deploy_bad(
    deployer: LocalDeployer, serving: ServiceHandle, uri: str, version: str, strategy: Any,
    error: type[Exception], frame: Any, load: Any,
) -> tuple[Load, str]:
    before = deployer.find_model_server(service_id=serving.service_id)[0].model_version
    traffic = load(serving.endpoint, frame)
    traffic.wait_for(lambda t: t.sent >= 20)
    with pytest.raises(error) as raised:
        deployer.deploy_model(
            DeploymentConfig(model_name=MODEL, model_uri=uri, model_version=version),
            strategy=strategy, timeout=120,
        )
    traffic.settle()  # answers of requests routed to the bad version before the rollback
    sent, failed = traffic.snapshot()
    traffic.wait_for(lambda t: t.sent >= sent + 40)  # after the rollback: all good again
    traffic.stop()
    assert traffic.failed == failed, traffic.failures[-5:]
    assert _serving_version(deployer, serving) == {before: 1.0}
    assert serving.is_running()
    assert deployer.find_model_server(service_id=serving.service_id)[0].model_version == before
    [last] = deployer.history(serving.service_id, limit=1)
    assert last.outcome == "failed" and last.config.model_version == version
    return traffic, str(raised.value)


def test_unloadable_version_is_rejected_and_old_keeps_serving(
    module_deployer: LocalDeployer, serving: ServiceHandle, churn_model: Any, load: Any
) -> None:
    traffic, message = _deploy_bad(
        module_deployer, serving, "models:/no-such-model/1", "404", "blue_green",
        VersionRejected, churn_model.example, load,
    )
    _report("unloadable (blue_green)", traffic, None)
    assert traffic.failed == 0
    assert "could not load version 404" in message and "keeps serving" in message


def test_crashing_version_fails_warm_up_and_old_keeps_serving(
    module_deployer: LocalDeployer, serving: ServiceHandle, churn_model: Any, load: Any,
    crashing_model_uri: str,
) -> None:
    traffic, message = _deploy_bad(
        module_deployer, serving, crashing_model_uri, "crash-1", "replace",
        VersionRejected, churn_model.example, load,
    )
    _report("crashing (replace)", traffic, None)
    assert traffic.failed == 0
    assert "crash-1" in message


@pytest.mark.parametrize(
    ("strategy", "reason"),
    [
        ({"name": "canary", "steps": [0.25], "interval_seconds": 2, "max_error_rate": 0.05},
         "canary failed at 25% traffic: error rate"),
        ({"name": "blue_green", "verify_seconds": 2}, "blue/green verification failed"),
    ],
    ids=["canary", "blue_green"],
)
def test_errors_under_traffic_roll_back_automatically(
    strategy: Any, reason: str, module_deployer: LocalDeployer, serving: ServiceHandle,
    churn_model: Any, load: Any, flaky_model_uri: str,
) -> None:
    version = f"flaky-{strategy['name']}"
    traffic, message = _deploy_bad(
        module_deployer, serving, flaky_model_uri, version, strategy, RolledBack,
        churn_model.example, load,
    )
    _report(f"flaky ({strategy['name']}) rolled back", traffic, None)
    assert reason in message and "Rolled back" in message
    assert traffic.failed > 0  # the bad version did answer with errors before the rollback


SHADOW = {"name": "shadow", "min_requests": 30, "max_seconds": 20, "poll_seconds": 0.2,
          "timeout_ms": 200}


def test_a_shadow_equal_to_the_champion_is_promoted_without_answering_before(
    module_deployer: LocalDeployer, serving: ServiceHandle, model_factory: Any,
    churn_model: Any, load: Any,
) -> None:
    new = model_factory(name=MODEL, kind="logistic_regression")  # the same fit: same answers
    traffic = load(serving.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 20)
    module_deployer.deploy_model(
        DeploymentConfig(model_name=MODEL, model_uri=new.uri, model_version=new.version),
        strategy=SHADOW,
    )
    traffic.wait_for(lambda t: t.versions[new.version] >= 20)
    traffic.stop()
    _report("shadow (equal) promoted", traffic, None)
    assert traffic.failed == 0, traffic.failures[:5]
    assert _serving_version(module_deployer, serving) == {new.version: 1.0}
    [last] = module_deployer.history(serving.service_id, limit=1)
    assert (last.strategy, last.outcome) == ("shadow", "succeeded")
    notes = list(last.notes)
    [summary] = [n for n in notes if n.startswith(f"shadow of version {new.version}: ")]
    assert "agreement 100.00%" in summary, notes
    assert int(summary.split("answered ")[1].split(",")[0]) >= 30, summary
    # traffic moved to it only once the analysis passed (no client answered by a shadow:
    # tests/serving/test_shadow.py counts that request by request)
    switched = notes.index(f"traffic {new.version}=1.00")
    assert notes.index(summary) < switched, notes


@pytest.mark.parametrize(("kind", "reason"), [
    ("contrary", "label agreement 0.00% below the limit"),
    ("flaky", "error rate 100.0% above the limit"),
    ("slow", "p99 latency"),
    ("hanging", "error rate 100.0% above the limit"),
])
def test_a_bad_shadow_is_dropped_and_no_client_sees_it(
    kind: str, reason: str, module_deployer: LocalDeployer, serving: ServiceHandle,
    churn_model: Any, load: Any, shadow_model_uri: Any,
) -> None:
    # the slow shadow (300 ms a call) must be judged on its latency, not time out
    strategy = {**SHADOW, "timeout_ms": 2000} if kind == "slow" else SHADOW
    traffic, message = _deploy_bad(
        module_deployer, serving, shadow_model_uri(kind), f"{kind}-shadow", strategy,
        ShadowDropped, churn_model.example, load,
    )
    _report(f"shadow ({kind}) dropped", traffic, None)
    assert traffic.failed == 0, traffic.failures[:5]  # its errors never reached a client
    assert reason in message and "was unloaded" in message, message
    assert f"{kind}-shadow" not in traffic.versions
    if kind == "contrary":
        assert "shadow_samples" in message


def test_an_inconclusive_shadow_held_for_a_person_shadows_until_dropped_or_promoted(
    module_deployer: LocalDeployer, serving: ServiceHandle, model_factory: Any,
    churn_model: Any, load: Any,
) -> None:
    """``inconclusive: hold`` (the training DAG's choice when approval is on): too few
    mirrored requests to judge leaves the shadow running, answering no client, recorded
    ``held``; dropping it leaves the live version alone, promoting it makes it live with
    the lineage its deploy recorded."""
    held = {**SHADOW, "min_requests": 100_000, "max_seconds": 2, "inconclusive": "hold"}
    live = module_deployer.find_model_server(service_id=serving.service_id)[0].model_version
    traffic = load(serving.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 20)
    for end in ("drop", "promote"):
        new = model_factory(name=MODEL, kind="logistic_regression")
        with pytest.raises(ShadowAwaitingDecision) as raised:
            module_deployer.deploy_model(
                DeploymentConfig(model_name=MODEL, model_uri=new.uri, model_version=new.version,
                                 dag_id="churn_training", run_id=f"run-{end}", task_id="deploy"),
                strategy=held, timeout=60)
        assert "was inconclusive: only" in raised.value.message
        assert (raised.value.version, raised.value.live_versions) == (new.version, [live])
        [last] = module_deployer.history(serving.service_id, limit=1)
        assert (last.strategy, last.outcome, last.config.model_version) == (
            "shadow", "held", new.version)
        shadow = module_deployer.describe_model_server(serving.service_id).shadow
        assert shadow is not None and shadow["version"] == new.version  # still shadowing
        mirrored = shadow["cumulative"]["mirrored"]
        sent = traffic.sent
        traffic.wait_for(lambda t, sent=sent: t.sent >= sent + 20)
        later = module_deployer.describe_model_server(serving.service_id).shadow
        assert later is not None and later["cumulative"]["mirrored"] > mirrored
        assert _serving_version(module_deployer, serving) == {live: 1.0}
        if end == "drop":
            module_deployer.rollback_model_server(serving.service_id, timeout=60)
            assert _serving_version(module_deployer, serving) == {live: 1.0}
            assert module_deployer.describe_model_server(serving.service_id).shadow is None
            dropped = new.version
            continue
        handle = module_deployer.promote_model_server(serving.service_id, timeout=60)
        assert handle.model_version == new.version
        [last] = module_deployer.history(serving.service_id, limit=1)
        assert (last.strategy, last.config.run_id) == ("promote", "run-promote")
        traffic.wait_for(lambda t, v=new.version: t.versions[v] >= 10)
    traffic.stop()
    assert traffic.failed == 0, traffic.failures[:5]
    assert dropped not in traffic.versions  # the dropped shadow never answered a client


def test_user_supplied_backend_by_dotted_path_drives_the_same_server(
    module_deployer: LocalDeployer, serving: ServiceHandle, model_factory: Any,
    churn_model: Any, load: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ctcd.deployers import get_deployer
    from ctcd.deployers.examples.static import StaticDeployer

    monkeypatch.setenv("CTCD_DEPLOYER", "ctcd.deployers.examples.static:StaticDeployer")
    monkeypatch.setenv("CTCD_STATIC_SERVERS", f'{{"{MODEL}": "{serving.endpoint}"}}')
    monkeypatch.setenv("CTCD_STATIC_ADMIN_TOKEN",
                       module_deployer.record(serving.service_id).admin_token)
    backend = get_deployer()
    assert isinstance(backend, StaticDeployer)
    new = model_factory(name=MODEL, kind="logistic_regression")
    traffic = load(serving.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 10)
    handle = backend.deploy_model(
        DeploymentConfig(model_name=MODEL, model_uri=new.uri, model_version=new.version),
        strategy="blue_green",
    )
    traffic.wait_for(lambda t: t.versions[new.version] >= 10)
    traffic.stop()
    assert traffic.failed == 0
    assert handle.backend == "ctcd.deployers.examples.static:StaticDeployer"
    assert get_deployer(handle.backend).find_model_server(running=True)[0].model_version == (
        new.version
    )
