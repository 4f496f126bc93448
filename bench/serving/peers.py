"""The servers the benchmark compares: how to install and start each one.

- ours: ``python -m ctcd.serving`` from a local model directory (``--workers 1`` or 2);
- MLServer 1.7.1 at its fastest configuration (``parallel_workers: 0``, adaptive batching
  ``max_batch_size: 64``, ``max_batch_time: 0.002``), installed by the benchmark into its
  own virtualenv (it pins other FastAPI/pydantic versions than this project). The V2 route
  uses its own runtime for the model's library: scikit-learn (``mlserver_sklearn``, a
  joblib file of the same fitted estimator; the churn pipeline gets the pandas content
  type), XGBoost (``mlserver_xgboost``, the model's ``.ubj`` file, loaded into its
  scikit-learn API) or LightGBM (``mlserver_lightgbm``, the Booster's text file); the
  MLflow route (``/invocations``) exists only in its MLflow runtime (``mlserver_mlflow``);
- ``mlflow models serve --env-manager local``.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from ctcd.stack.processes import free_port, spawn, stop_process_tree

ROOT = Path(__file__).resolve().parents[2]
MLSERVER_VERSION = "1.7.1"
# git-ignored (.state/); reused across runs, rebuilt when the pins below change
MLSERVER_VENV = ROOT / ".state" / "bench" / f"mlserver-{MLSERVER_VERSION}"
MAX_BATCH_SIZE = 64
MAX_BATCH_TIME = 0.002


# MLServer's runtime for each library: its class, and the model file it is given
RUNTIMES = {
    "sklearn": ("mlserver_sklearn.SKLearnModel", "model.joblib"),
    "xgboost": ("mlserver_xgboost.XGBoostModel", "model.ubj"),
    "lightgbm": ("mlserver_lightgbm.LightGBMModel", "model.bst"),
    "mlflow": ("mlserver_mlflow.MLflowRuntime", ""),  # the MLflow model directory itself
}


def mlserver_pins() -> list[str]:
    """MLServer and its runtimes, with the model libraries at this project's versions (the
    same fitted models must load in both virtualenvs). XGBoost is the project's CPU-only
    wheel; mlserver-xgboost (which names the CUDA one) is installed without dependencies
    (:data:`NO_DEPS`)."""
    from importlib.metadata import version

    same = [f"{p}=={version(p)}" for p in ("scikit-learn", "skops", "mlflow", "pandas",
                                           "numpy", "xgboost-cpu", "lightgbm")]
    return [f"mlserver=={MLSERVER_VERSION}", f"mlserver-sklearn=={MLSERVER_VERSION}",
            f"mlserver-mlflow=={MLSERVER_VERSION}", f"mlserver-lightgbm=={MLSERVER_VERSION}",
            "psutil", *same]


NO_DEPS = [f"mlserver-xgboost=={MLSERVER_VERSION}"]


def install_mlserver() -> Path:
    """The MLServer virtualenv's bin directory, created with uv on first use."""
    pins = mlserver_pins()
    stamp = MLSERVER_VENV / ".pins"
    if stamp.is_file() and stamp.read_text() == "\n".join(pins + NO_DEPS):
        return MLSERVER_VENV / "bin"
    uv = Path(sys.executable).parent / "uv"
    print(f"installing MLServer {MLSERVER_VERSION} into {MLSERVER_VENV} ...", file=sys.stderr,
          flush=True)
    python = str(MLSERVER_VENV / "bin" / "python")
    subprocess.run([str(uv), "venv", "--quiet", "--python", "3.11", str(MLSERVER_VENV)],
                   check=True)
    subprocess.run([str(uv), "pip", "install", "--quiet", "--compile-bytecode", "--python",
                    python, *pins], check=True)
    subprocess.run([str(uv), "pip", "install", "--quiet", "--compile-bytecode", "--no-deps",
                    "--python", python, *NO_DEPS], check=True)
    stamp.write_text("\n".join(pins + NO_DEPS))
    return MLSERVER_VENV / "bin"


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    port: int
    cold_start_s: float
    metrics_url: str | None  # where the batch histogram is, when the server has one
    runtime: str
    grpc_port: int | None = None
    # CPU seconds the server's processes spent to get ready: on a shared machine a
    # steadier figure than the wall-clock cold start, which waits for busy cores
    cold_start_s_cpu: float = 0.0
    # ours compiled: seconds from start until its compiled model answers (ready, when the
    # graph answers first; later when the original answers while the graph opens), and
    # until the original is loaded behind it and compared again (nothing loading any more)
    compiled_s: float | None = None
    settled_s: float | None = None


def wait_ready(proc: subprocess.Popen[bytes], url: str, started: float, log: Path,
               what: str, method: str = "GET") -> tuple[float, float]:
    """Seconds from ``started`` until ``url`` answers 200 (to ``method``), and the CPU
    seconds of the process tree by then."""
    deadline = started + 300
    with httpx.Client(timeout=1.0) as client:
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited early; see {log}")
            try:
                if client.request(method, url).status_code == 200:
                    return time.perf_counter() - started, _tree_cpu(proc.pid)
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"{what} did not become ready; see {log}")


def _tree_cpu(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def start_ours(model_dir: Path, name: str, version: str, workers: int, work: Path,
               extra: tuple[str, ...] = ()) -> Started:
    port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "ctcd.serving", "--model-uri", str(model_dir),
            "--model-name", name, "--model-version", version, "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--grpc-port", str(grpc_port),
            *extra]
    log = work / f"ctcd-{name}-w{workers}-{port}.log"
    started = time.perf_counter()
    proc = spawn(argv, log_path=log)
    cold, cpu = wait_ready(proc, f"http://127.0.0.1:{port}/v2/health/ready", started, log,
                            "ctcd")
    compiled, settled = (None, None) if "--no-compiled" in extra else wait_compiled(
        f"http://127.0.0.1:{port}/v2/models/{name}", started)
    return Started(proc, port, cold, f"http://127.0.0.1:{port}/metrics", "ctcd", grpc_port,
                   cpu, compiled, settled)


def wait_compiled(metadata_url: str, started: float) -> tuple[float, float]:
    """Seconds from ``started`` until the compiled model answers (the metadata's runtime
    is ``onnxruntime``), and until nothing is opened or loaded any more (not ``compiled:
    pending``, no ``original: loading``), so no cell is measured while the original still
    answers or still loads behind the graph."""
    deadline = time.perf_counter() + 60
    answering = None
    with httpx.Client(timeout=5.0) as client:
        while time.perf_counter() < deadline:
            parameters = client.get(metadata_url).json().get("parameters", {})
            if answering is None and parameters.get("runtime") == "onnxruntime":
                answering = time.perf_counter() - started
            if parameters.get("compiled") != "pending" and "original" not in parameters:
                if parameters.get("compiled") != "verified" or answering is None:
                    raise RuntimeError(f"the compiled model does not answer: {parameters}")
                return answering, time.perf_counter() - started
            time.sleep(0.01)
    raise TimeoutError(f"the compiled model was still pending, or its original loading, "
                       f"after 60 s ({metadata_url})")


def start_mlserver(bin_dir: Path, runtime: str, model_dir: Path, name: str,
                   work: Path) -> Started:
    """``runtime``: a key of :data:`RUNTIMES`; ``model_dir`` holds its model file (the
    MLflow model directory for ``mlflow``)."""
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    root = work / f"mlserver-{name}-{runtime}-{port}"
    root.mkdir(parents=True)
    implementation, filename = RUNTIMES[runtime]
    uri = str(model_dir / filename) if filename else str(model_dir)
    (root / "settings.json").write_text(json.dumps({
        "debug": False, "parallel_workers": 0, "http_port": port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "host": "127.0.0.1"}))
    (root / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": implementation,
        "max_batch_size": MAX_BATCH_SIZE, "max_batch_time": MAX_BATCH_TIME,
        "parameters": {"uri": uri}}))
    log = root / "mlserver.log"
    started = time.perf_counter()
    proc = spawn([str(bin_dir / "mlserver"), "start", str(root)], log_path=log,
                 env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, cwd=root)
    cold, cpu = wait_ready(proc, f"http://127.0.0.1:{port}/v2/models/{name}/ready", started,
                            log, "mlserver")
    return Started(proc, port, cold, None, f"mlserver_{runtime}", grpc_port, cpu)


def start_mlflow(model_dir: Path, work: Path) -> Started:
    port = free_port()
    log = work / f"mlflow-serve-{port}.log"
    started = time.perf_counter()
    proc = spawn([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
                  "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
                  "--workers", "1"], log_path=log)
    cold, cpu = wait_ready(proc, f"http://127.0.0.1:{port}/ping", started, log, "mlflow")
    return Started(proc, port, cold, None, "mlflow", cold_start_s_cpu=cpu)


COLD_ROUNDS = 3


def cold_starts(model_dir: Path, name: str, version: str,
                work: Path) -> dict[str, dict[str, float]]:
    """Our server's cold start compiled and uncompiled, alone (no other server of the
    benchmark running or starting), one after the other COLD_ROUNDS times, each round
    starting the other one first: the median wall-clock and CPU seconds to ready of each,
    when the compiled one's graph answered (``compiled_s``) and when its original was loaded
    behind it (``settled_s``). Among the cells' servers
    the compiled one starts right after the two-worker one, whose second worker may still
    be warming."""
    runs: dict[str, list[tuple[float, float]]] = {"ctcd": [], "ctcd_compiled": []}
    switched: list[float] = []
    settled: list[float] = []
    pair = (("ctcd_compiled", ()), ("ctcd", ("--no-compiled",)))
    for round_ in range(COLD_ROUNDS):
        for server, extra in pair if round_ % 2 == 0 else pair[::-1]:
            started = start_ours(model_dir, name, version, 1, work, extra)
            stop_process_tree(started.proc.pid)
            runs[server].append((started.cold_start_s, started.cold_start_s_cpu))
            if started.compiled_s is not None and started.settled_s is not None:
                switched.append(started.compiled_s)
                settled.append(started.settled_s)
    cold = {server: {"wall_s": statistics.median(w for w, _ in values),
                     "cpu_s": statistics.median(c for _, c in values)}
            for server, values in runs.items()}
    cold["ctcd_compiled"]["compiled_s"] = statistics.median(switched)
    cold["ctcd_compiled"]["settled_s"] = statistics.median(settled)
    return cold
