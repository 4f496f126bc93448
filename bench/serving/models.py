"""The benchmark's models: fitted, logged and registered in a tracking server of its own,
compiled as a registered version is, downloaded to the local directories every server
starts from, with the request bodies of each protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
from grid import FEATURES, KIND_PROTOCOLS, MODEL_NAME, NUMERIC_KINDS, ROWS

from ctcd.stack.processes import free_port, spawn, wait_http


class Tracking:
    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc, self.url = proc, url


def start_tracking(work: Path) -> Tracking:
    port = free_port()
    log = work / "mlflow-server.log"
    proc = spawn([sys.executable, "-m", "mlflow", "server",
                  "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
                  "--artifacts-destination", str(work / "artifacts"),
                  "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], log_path=log)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=180, process=proc, log_path=log)
    return Tracking(proc, url)


def register_models(tracking_uri: str, work: Path) -> dict[str, Any]:
    """Fit, log and register the models; download each to a local directory (the one every
    server starts from) and save the file MLServer's runtime for its library loads (a
    joblib copy of a scikit-learn estimator, XGBoost's own file, the LightGBM Booster's)."""
    from datetime import date

    import lightgbm as lgb
    import mlflow
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from ctcd.data.churn import FEATURES as CHURN_FEATURES
    from ctcd.data.churn import LABEL, generate_snapshot
    from ctcd.models import load_model
    from ctcd.training.model import DEFAULT_HYPERPARAMETERS, build_pipeline, log_model

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench-serving")
    x, y = make_classification(n_samples=5000, n_features=20, n_informative=8,
                               random_state=0)
    numeric = pd.DataFrame(x, columns=FEATURES)
    target = x[:, :8] @ np.linspace(1.0, 2.0, 8) + np.random.default_rng(0).normal(size=len(x))
    churn = generate_snapshot(date(2026, 1, 1), rows=5_000)
    churn_x = churn[list(CHURN_FEATURES)]
    kind_default = str(load_model("churn").trainer.estimator)
    fitted = {
        "random_forest": (RandomForestClassifier(n_estimators=100, max_depth=12,
                                                 random_state=0).fit(numeric, y), numeric),
        "churn": (build_pipeline(kind_default, DEFAULT_HYPERPARAMETERS[kind_default])
                  .fit(churn_x, churn[LABEL]), churn_x),
        "xgboost": (xgb.XGBClassifier(n_estimators=100, max_depth=6, random_state=0)
                    .fit(numeric, y), numeric),
        "lightgbm": (lgb.LGBMRegressor(n_estimators=100, num_leaves=31, random_state=0,
                                       verbose=-1).fit(numeric, target), numeric),
    }
    labels = {"random_forest": "RandomForest", "churn": kind_default,
              "xgboost": "XGBClassifier", "lightgbm": "LGBMRegressor"}
    models: dict[str, Any] = {}
    for kind, (estimator, frame) in fitted.items():
        runtime = kind if kind in ("xgboost", "lightgbm") else "sklearn"
        with mlflow.start_run(run_name=f"bench-{kind}"):
            info = _log(kind, estimator, frame, log_model)
        compiled = _compile(kind, str(info.registered_model_version), frame, tracking_uri)
        root = work / "models" / kind
        (root / runtime).mkdir(parents=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL_NAME[kind]}/{info.registered_model_version}",
            dst_path=str(root / "mlflow"))
        if runtime == "xgboost":
            estimator.save_model(str(root / runtime / "model.ubj"))
        elif runtime == "lightgbm":
            estimator.booster_.save_model(str(root / runtime / "model.bst"))
        else:
            joblib.dump(estimator, root / runtime / "model.joblib")
        models[kind] = {"dir": Path(local), "runtime": runtime, "runtime_dir": root / runtime,
                        "version": str(info.registered_model_version),
                        "estimator": estimator,
                        "sample": frame.sample(200, random_state=1).reset_index(drop=True),
                        "label": labels[kind], "bodies": {}, "compiled": compiled}
        for protocol in KIND_PROTOCOLS[kind]:
            for rows in ROWS:
                models[kind]["bodies"][protocol, rows] = _body(
                    work, kind, protocol, models[kind]["sample"].head(rows))
    # two LogisticRegression versions for the hot-swap part, as local directories
    swap = {}
    for name, estimator in (("1", LogisticRegression(max_iter=500)),
                            ("2", LogisticRegression(C=0.01, max_iter=500))):
        with mlflow.start_run(run_name=f"bench-lr-{name}"):
            info = log_model(estimator.fit(numeric, y), numeric.head(5),
                             registered_model_name="bench-logistic_regression")
        swap[name] = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/bench-logistic_regression/{info.registered_model_version}",
            dst_path=str(work / "models" / f"swap-{name}"))
    models["swap"] = {**swap, "body": _body(work, "swap", "mlflow", numeric.head(1))}
    return models


def _compile(kind: str, version: str, frame: Any, tracking_uri: str) -> dict[str, Any]:
    """Compile the registered version as ``ctcd models compile`` does (the graph is logged
    beside the model, so the downloaded directory has it), verified on 2,000 of its rows."""
    from ctcd.compiled.version import compile_version
    from ctcd.tracking import Tracking

    outcome = compile_version(MODEL_NAME[kind], version, tracking=Tracking(tracking_uri),
                              rows=frame.sample(2000, random_state=2))
    m, tags = outcome.manifest, outcome.tags()
    print(f"  {kind:13s} compiled: {tags['ctcd.compiled']}: {tags['ctcd.compiled.reason']}; "
          f"speedup {dict(m.speedup)}", file=sys.stderr, flush=True)
    # a verified graph is used only where it was measured faster (1 row and all rows)
    return {"verified": m.verified, "used": m.verified and m.faster,
            "reason": tags["ctcd.compiled.reason"], "max_abs_diff": m.max_abs_diff,
            "rows": m.rows, "speedup": dict(m.speedup)}


def _log(kind: str, estimator: Any, frame: Any, log_sklearn: Any) -> Any:
    """Log with the model's own MLflow flavor (as training does), registered."""
    import mlflow
    from mlflow.models import infer_signature

    if kind not in ("xgboost", "lightgbm"):
        return log_sklearn(estimator, frame.head(5), registered_model_name=MODEL_NAME[kind])
    signature = infer_signature(frame.head(5), estimator.predict(frame.head(5)))
    options = {"serialization_format": "pickle"} if kind == "lightgbm" else {}
    return getattr(mlflow, kind).log_model(
        estimator, name="model", signature=signature, input_example=frame.head(5),
        registered_model_name=MODEL_NAME[kind], **options)


def _body(work: Path, kind: str, protocol: str, part: Any) -> Path:
    path = work / f"body-{kind}-{protocol}-{len(part)}.json"
    if protocol == "grpc":  # a serialized inference.ModelInferRequest
        from ctcd.serving.grpc import protos

        pb2 = protos()[0]
        request = pb2.ModelInferRequest(model_name=MODEL_NAME[kind], inputs=[
            pb2.ModelInferRequest.InferInputTensor(
                name="input-0", datatype="FP64", shape=list(part.shape),
                contents=pb2.InferTensorContents(fp64_contents=part.to_numpy().ravel()))])
        path.write_bytes(request.SerializeToString())
        return path
    if protocol == "mlflow":
        doc: dict[str, Any] = {"dataframe_split": json.loads(
            part.to_json(orient="split", index=False))}
    elif kind in NUMERIC_KINDS:  # one [n, 20] tensor (numpy content type)
        doc = {"inputs": [{"name": "input-0", "shape": list(part.shape), "datatype": "FP64",
                           "data": part.to_numpy().ravel().tolist()}]}
    else:  # one tensor per column (MLServer's pandas content type)
        inputs = []
        for column in part.columns:
            values = part[column]
            if values.dtype.kind in "iu":
                entry: dict[str, Any] = {"datatype": "INT64", "data": [int(v) for v in values]}
            elif values.dtype.kind == "f":
                entry = {"datatype": "FP64", "data": [float(v) for v in values]}
            else:
                entry = {"datatype": "BYTES", "data": [str(v) for v in values],
                         "parameters": {"content_type": "str"}}
            inputs.append({"name": column, "shape": [len(part)], **entry})
        doc = {"inputs": inputs, "parameters": {"content_type": "pd"}}
    path.write_text(json.dumps(doc))
    return path

