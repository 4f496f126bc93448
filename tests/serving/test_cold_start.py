"""What a model server imports on its way to ready, and that loading a scikit-learn model
without mlflow gives mlflow's own model. (Cold-start time is measured by
``make bench-serving``, not here.)"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ctcd.serving.flavors.sklearn import listed_estimator
from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http

# Imported by no path to ready of a server of a local scikit-learn model: the tracking
# client, Airflow, the project's training code, gRPC without --grpc-port, httpx without
# a tracking server, a scikit-learn module that only skops' all_estimators() scan would
# import, and the other flavors' libraries.
NOT_NEEDED = ("mlflow", "airflow", "ctcd.training", "ctcd.pipelines", "ctcd.data", "grpc",
              "httpx", "sklearn.semi_supervised", "xgboost", "lightgbm")
# An XGBoost or LightGBM model (Booster, or scikit-learn API in pickle format) needs no skops
# and not the other gradient-boosting library either.
NOT_NEEDED_BOOSTED = {
    "xgboost": (*(m for m in NOT_NEEDED if m != "xgboost"), "skops"),
    "lightgbm": (*(m for m in NOT_NEEDED if m != "lightgbm"), "skops"),
}

_GUARD = textwrap.dedent(
    """
    import importlib.abc, runpy, sys
    refused = sys.argv.pop(1).split(",")

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == r or name.startswith(r + ".") for r in refused):
                raise ModuleNotFoundError(f"{name} is refused on the way to ready")
            return None

    sys.meta_path.insert(0, Refuse())
    runpy.run_module("ctcd.serving", run_name="__main__", alter_sys=True)
    """
)


@pytest.fixture(scope="module")
def model_dirs(churn_model: Any, model_factory: Any,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local copies of the two kinds the benchmark serves: the churn pipeline ending in
    HistGradientBoosting, and one ending in a RandomForest."""
    import mlflow

    forest = model_factory(name="churn-forest-cold", kind="random_forest")
    root = tmp_path_factory.mktemp("cold-start-models")
    return {kind: Path(mlflow.artifacts.download_artifacts(artifact_uri=model.uri,
                                                           dst_path=str(root / kind)))
            for kind, model in (("hist_gradient_boosting", churn_model),
                                ("random_forest", forest))}


@pytest.mark.parametrize("kind", ["hist_gradient_boosting", "random_forest"])
def test_a_sklearn_model_loads_as_mlflow_loads_it(kind: str, model_dirs: dict[str, Path],
                                                  churn_model: Any, tmp_path: Path) -> None:
    """In a fresh interpreter (skops not yet imported, as in a server): the same object as
    mlflow.sklearn's loader, without the all_estimators() scan."""
    import mlflow

    local = model_dirs[kind]
    out = tmp_path / "model.pickle"
    code = textwrap.dedent(f"""
        import pickle, sys, yaml
        from pathlib import Path
        from ctcd.serving.flavors import load_native
        from ctcd.serving.schema import InputSchema
        local = Path({str(local)!r})
        meta = yaml.safe_load((local / "MLmodel").read_text())
        schema = InputSchema.from_signature_json(meta["signature"]["inputs"])
        model = load_native("m", local, meta, schema).model
        assert "sklearn.semi_supervised" not in sys.modules, "skops scanned every estimator"
        assert "mlflow" not in sys.modules
        Path({str(out)!r}).write_bytes(pickle.dumps(model))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    ours = pickle.loads(out.read_bytes())
    theirs = mlflow.sklearn.load_model(str(local))
    assert type(ours) is type(theirs)
    assert _params(ours) == _params(theirs)
    assert sorted(vars(ours)) == sorted(vars(theirs))  # fitted attributes too
    frame = churn_model.example
    assert (ours.predict_proba(frame) == theirs.predict_proba(frame)).all()
    assert (ours.predict(frame) == mlflow.pyfunc.load_model(str(local)).predict(frame)).all()


def _params(model: Any) -> str:
    """The model's parameters, without object addresses (``<... at 0x7f...>``)."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(model.get_params(deep=True)))


def test_estimators_confirmed_one_by_one_are_those_skops_trusts() -> None:
    """Every estimator skops trusts by default is confirmed by itself; nothing else is."""
    from sklearn.utils import all_estimators
    from skops.io._utils import get_type_name

    listed = {get_type_name(cls) for _, cls in all_estimators()}
    listed = {name for name in listed if name.startswith("sklearn.")}
    assert len(listed) > 150
    assert [name for name in sorted(listed) if not listed_estimator(name)] == []
    for name in ("sklearn.tree._tree.Tree", "sklearn.base.BaseEstimator",
                 "sklearn.ensemble._forest.BaseForest",  # abstract
                 "sklearn.compose._column_transformer.make_column_selector",  # no estimator
                 "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                 "sklearn.pipeline.Pipeline.nope", "sklearn.ensemble.RandomForestClassifier",
                 "sklearn.utils._testing.MinimalClassifier", "os.system", "builtins.eval"):
        assert name not in listed
        assert not listed_estimator(name), name


@pytest.mark.parametrize("args", [(), ("--workers", "2"), ("--grpc-port", "0")],
                         ids=["one", "workers", "grpc"])
def test_a_server_imports_only_what_it_serves(args: tuple[str, ...],
                                              model_dirs: dict[str, Path],
                                              tmp_path: Path) -> None:
    """``python -m ctcd.serving`` on a local model directory, with every module it should
    not need refused: it becomes ready and answers."""
    refused = [m for m in NOT_NEEDED if not (m == "grpc" and "--grpc-port" in args)]
    _serve_refusing(model_dirs["hist_gradient_boosting"], refused, args, tmp_path)


@pytest.mark.parametrize(("kind", "args"), [
    ("xgboost-binary", ()), ("xgboost-booster", ()), ("xgboost-numeric", ("--workers", "2")),
    ("lightgbm-regression", ()), ("lightgbm-booster", ()),
    ("lightgbm-numeric", ("--workers", "2")),
])
def test_an_xgboost_or_lightgbm_server_imports_only_what_it_serves(
    kind: str, args: tuple[str, ...], flavored_model: Any, tmp_path: Path
) -> None:
    """Served natively: no mlflow (nor skops, nor the other library) on the way to ready;
    with --workers 2 the workers fork from a supervisor that loaded the model."""
    import mlflow

    model = flavored_model(kind)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.uri,
                                                     dst_path=str(tmp_path / "model")))
    _serve_refusing(local, list(NOT_NEEDED_BOOSTED[model.flavor]), args, tmp_path)


def _serve_refusing(local: Path, refused: list[str], args: tuple[str, ...],
                    tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    proc = spawn([sys.executable, "-c", _GUARD, ",".join(refused), "--model-uri", str(local),
                  "--model-name", "churn", "--model-version", "1", "--host", "127.0.0.1",
                  "--port", str(port), *args], log_path=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=180, process=proc,
                  log_path=log)
        example = yaml.safe_load((local / "MLmodel").read_text())["saved_input_example_info"]
        body = (local / example["serving_input_path"]).read_bytes()
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", content=body,
                              headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 5
    finally:
        stop_process_tree(proc.pid)
    assert "refused on the way to ready" not in log.read_text()
