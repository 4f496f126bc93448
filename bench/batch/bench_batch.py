"""Benchmark: batch and streaming scoring against their limits, in one run on this machine.

* Batch, in-process (``ctcd.batch.score.score_file``: read a chunk, check every row against
  the signature, predict, write Parquet with model name/version, the three overlapped):
  rows/s against calling the model's ``predict`` once on the whole frame already in memory
  (the limit; no reading, checking or writing). Both run in one process, alternately, three
  times each on the smaller input; the best of each is compared (the machine is shared, so
  a single run measures its neighbours as much as the code). Target: >= 0.8x the limit.
* Memory: a fresh subprocess per size (1 M and 10 M rows) loads the model, notes its RSS,
  resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) and scores the file. It
  reports the peak RSS of the whole process and the growth of the peak over the RSS after
  the model was loaded (what scoring itself holds: the model load, with MLflow's imports,
  is most of the total). Target: growth at 10 M within 1.2x of the growth at 1 M.
* Compiled: the same in-process scoring of 1,000,000 rows with the model's compiled form
  as ``ctcd predict`` loads it (its tree library built by tl2cgen behind the graph's
  preprocessing, on every core; ``ctcd models compile`` ran at registration) against its own
  library (scikit-learn), fresh processes, alternately, three times each: rows/s (target >=
  2x), CPU seconds, and the peak RSS growth while scoring (target: within 1.1x). Every other
  cell runs uncompiled (``CTCD_COMPILED=false``), as before.
* Batch through the endpoint (the batch_inference DAG's ``mode=endpoint``): the same file
  scored through a model server on loopback in batched requests; rows/s against the
  in-process mode on the same rows.
* Streaming: messages/s through one scorer (``python -m ctcd.streaming``) on a loopback
  ``redis-server`` against the same rows sent one per request to the model server
  (``python -m ctcd.serving``) over HTTP by one client; then the messages lost when a
  scorer is SIGKILLed mid-batch and a second one takes over (target 0).

The model is the churn pipeline (HistGradientBoosting, as continuous_training trains it),
registered in a throwaway SQLite MLflow registry. ``--quick`` uses 100 k / 1 M rows and
fewer messages. Ends with one JSON line of all figures.

Run: ``make bench-batch`` (``make bench-batch BENCH_ARGS=--quick``); needs redis-server.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import streaming_cell  # noqa: E402

import plots  # noqa: E402
from ctcd import reaper  # noqa: E402

MODEL = "churn-bench"


# -- children (fresh processes: their peak RSS is their own) ----------------------------------


def child_batch(source: Path, output: Path, chunk_rows: int,
                compiled: str = "off") -> dict[str, Any]:
    """Score ``source`` once; peak RSS of the process and its growth over the RSS right
    after the model is loaded (the kernel's peak mark is reset there). ``compiled``: "on"
    answers with the version's compiled model (its tree library, or the graph in ONNX
    Runtime), "off" with its own library."""
    from ctcd.batch.model import load_version
    from ctcd.batch.score import score_file

    os.environ["CTCD_COMPILED"] = "true" if compiled == "on" else "false"
    model = load_version(MODEL, "1", batch=True)  # as ctcd predict and batch_inference do
    runtime = model.model.runtime
    if (compiled == "on") != (runtime in ("onnxruntime", "tl2cgen")):
        raise RuntimeError(f"compiled={compiled} but {runtime} answers: "
                           f"{model.model.compiled_view()}")
    load_peak = _peak_mb()
    after_load = _status_mb("VmRSS")
    reset = _reset_peak()
    cpu = _cpu_s()
    summary = score_file(model, source, output, chunk_rows=chunk_rows)
    cpu = _cpu_s() - cpu
    scoring_peak = _status_mb("VmHWM") if reset else _peak_mb()
    return {"rows": summary.rows, "seconds": summary.seconds,
            "rows_per_s": summary.rows / summary.seconds,
            "peak_rss_mb": max(load_peak, scoring_peak), "rss_after_load_mb": after_load,
            "peak_growth_mb": scoring_peak - after_load, "peak_reset": reset,
            "runtime": runtime, "cpu_s": cpu}


def child_ratio(source: Path, output: Path, chunk_rows: int, rounds: int) -> dict[str, Any]:
    """The limit (one ``predict`` on the whole frame, read beforehand) and ``score_file`` on
    the same file, alternately, ``rounds`` times each in this process."""
    import gc

    import pandas as pd

    from ctcd.batch.model import load_version
    from ctcd.batch.score import score_file
    from ctcd.data.churn import FEATURES

    model = load_version(MODEL, "1", batch=True)
    assert model.model.native is not None
    limit, batch = [], []
    rows = 0
    for _ in range(rounds):
        frame = pd.read_parquet(source, columns=list(FEATURES))
        rows = len(frame)
        started = time.perf_counter()
        model.model.native.predict(frame)
        limit.append(time.perf_counter() - started)
        del frame
        gc.collect()
        summary = score_file(model, source, output, chunk_rows=chunk_rows)
        batch.append(summary.seconds)
    return {"rows": rows, "limit_seconds": limit, "batch_seconds": batch,
            "limit_rows_per_s": rows / min(limit), "batch_rows_per_s": rows / min(batch),
            "batch_vs_limit": min(limit) / min(batch)}


def child_endpoint(source: Path, output: Path, chunk_rows: int) -> dict[str, Any]:
    """The same file through a model server on loopback (``ctcd.batch.endpoint``: the
    batch_inference DAG's ``mode=endpoint``): chunks checked here, sent in batched requests
    with bounded concurrency, predictions written as in-process."""
    from ctcd.batch.endpoint import RemotePredictor, signature_schema
    from ctcd.batch.model import ScoringModel
    from ctcd.batch.score import score_file
    from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http

    port, log = free_port(), output.with_suffix(".server.log")
    server = spawn([sys.executable, "-m", "ctcd.serving", "--model-uri", f"models:/{MODEL}/1",
                    "--model-name", MODEL, "--model-version", "1", "--port", str(port)],
                   log_path=log, env=dict(os.environ))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ping", timeout=300, process=server, log_path=log)
        remote = RemotePredictor(url, signature_schema(f"models:/{MODEL}/1"), model_name=MODEL,
                                 batch_rows=ENDPOINT_BATCH_ROWS, concurrency=ENDPOINT_CONCURRENCY)
        model = ScoringModel(MODEL, "1", remote)  # type: ignore[arg-type]
        summary = score_file(model, source, output, chunk_rows=chunk_rows)
        remote.close()
    finally:
        stop_process_tree(server.pid, timeout=10)
    return {"rows": summary.rows, "seconds": summary.seconds,
            "rows_per_s": summary.rows / summary.seconds, "requests": remote.requests,
            "batch_rows": ENDPOINT_BATCH_ROWS, "concurrency": ENDPOINT_CONCURRENCY,
            "peak_rss_mb": _peak_mb()}


ROUNDS = 3
COMPILED_ROWS = 1_000_000  # the compiled cell's file (both modes write one this size)
ENDPOINT_BATCH_ROWS = 5_000
ENDPOINT_CONCURRENCY = 2


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds of this process so far, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_mb(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _compiled_cell(work: Path, source: Path, chunk: int) -> dict[str, Any]:
    """In-process batch scoring of the same file with the compiled model (on
    CTCD_COMPILED_BATCH_THREADS, by default every core) and uncompiled (the model's own
    library), each in fresh processes, alternately, ROUNDS times: best rows/s of each, and
    the peak RSS growth while scoring (the largest of the rounds: memory does not vary with a
    busy machine)."""
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for _ in range(ROUNDS):
        for mode in ("on", "off"):
            runs[mode].append(_run_child(work, "batch", str(source),
                                         str(work / f"out-compiled-{mode}.parquet"), str(chunk),
                                         mode))
    best = {m: max(r["rows_per_s"] for r in rs) for m, rs in runs.items()}
    cpu = {m: min(r["cpu_s"] for r in rs) for m, rs in runs.items()}
    growth = {m: max(r["peak_growth_mb"] for r in rs) for m, rs in runs.items()}
    cell = {"rows": runs["on"][0]["rows"], "rounds": ROUNDS,
            "compiled_runtime": runs["on"][0]["runtime"],
            "compiled_rows_s": best["on"], "uncompiled_rows_s": best["off"],
            "rows_s_ratio": best["on"] / best["off"],
            # CPU seconds to score the file, a steadier figure on a busy machine
            "compiled_cpu_s": cpu["on"], "uncompiled_cpu_s": cpu["off"],
            "cpu_ratio": cpu["off"] / cpu["on"],
            "compiled_peak_growth_mb": growth["on"], "uncompiled_peak_growth_mb": growth["off"],
            "peak_growth_ratio": growth["on"] / growth["off"],
            "compiled_rss_after_load_mb": runs["on"][0]["rss_after_load_mb"],
            "uncompiled_rss_after_load_mb": runs["off"][0]["rss_after_load_mb"]}
    print(f"compiled batch in-process {cell['rows']:,} rows ({cell['compiled_runtime']}): "
          f"{best['on']:,.0f} rows/s vs "
          f"uncompiled {best['off']:,.0f} rows/s: x{cell['rows_s_ratio']:.2f} (target >= 2; "
          f"CPU seconds {cpu['on']:.2f} vs {cpu['off']:.2f}: x{cell['cpu_ratio']:.2f}); "
          f"peak RSS growth while scoring {growth['on']:,.0f} vs {growth['off']:,.0f} MB: "
          f"x{cell['peak_growth_ratio']:.2f} (target <= 1.1); best of {ROUNDS} each, "
          "alternated", flush=True)
    return cell


def _run_child(work: Path, *args: str) -> dict[str, Any]:
    with subprocess.Popen([sys.executable, __file__, "--child", *args, "--work", str(work)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=_env(work)) as child:
        reaper.watch(child.pid)
        try:
            out, err = child.communicate()
        except BaseException:  # stopped (SIGTERM): the child goes too
            child.kill()
            raise
    if child.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{err[-3000:]}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def _env(work: Path) -> dict[str, str]:
    # the uncompiled path everywhere but in the compiled cell (child_batch ... on)
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "CTCD_HOME": str(work / "home"), "PYTHONPATH": str(ROOT / "plugins"),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "CTCD_COMPILED": "false"}


# -- setup -----------------------------------------------------------------------------------


def register_model(work: Path) -> dict[str, float]:
    """Train, register and compile the churn model; the compile step's measured speedups."""
    import mlflow

    from ctcd.compiled.version import compile_version
    from ctcd.data.churn import FEATURES, LABEL, generate_snapshot
    from ctcd.tracking import Tracking
    from ctcd.training.model import build_pipeline, log_model

    frame = generate_snapshot(date(2026, 1, 1), rows=20_000)
    features = frame[list(FEATURES)]
    pipeline = build_pipeline("hist_gradient_boosting", {"max_iter": 100})
    pipeline.fit(features, frame[LABEL])
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    # the model's artifacts in the work directory too (the default is ./mlruns of the cwd)
    mlflow.create_experiment("bench-batch", artifact_location=(work / "artifacts").as_uri())
    mlflow.set_experiment("bench-batch")
    with mlflow.start_run():
        log_model(pipeline, features.head(5), registered_model_name=MODEL)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", "1")
    # compiled as a registered version is (ctcd models compile): verified on 2,000 rows
    outcome = compile_version(MODEL, "1", tracking=Tracking(f"sqlite:///{work / 'mlflow.db'}"),
                              rows=features.sample(2000, random_state=1))
    if not outcome.manifest.verified:
        raise RuntimeError(f"the bench model did not compile: {outcome.manifest.reason}")
    return dict(outcome.manifest.speedup)


def write_inputs(work: Path, sizes: list[int]) -> dict[int, Path]:
    """One Parquet file per size (row groups of 100 k), built from 1 M generated rows
    repeated, so 10 M rows do not take minutes to generate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ctcd.data.churn import generate_snapshot

    base = pa.Table.from_pandas(generate_snapshot(date(2026, 1, 2), rows=min(max(sizes),
                                                                               1_000_000)),
                                preserve_index=False)
    paths = {}
    for size in sizes:
        path = work / f"input-{size}.parquet"
        with pq.ParquetWriter(path, base.schema) as writer:
            left = size
            while left:
                part = base.slice(0, min(left, base.num_rows))
                writer.write_table(part, row_group_size=100_000)
                left -= part.num_rows
        paths[size] = path
    return paths


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 k / 1 M rows, fewer messages")
    parser.add_argument("--child", nargs="*")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        os.environ.update(_env(args.work))
        if kind == "batch":
            result = child_batch(Path(rest[0]), Path(rest[1]), int(rest[2]), *rest[3:])
        elif kind == "endpoint":
            result = child_endpoint(Path(rest[0]), Path(rest[1]), int(rest[2]))
        else:
            result = child_ratio(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return 0

    # Stopped by SIGTERM: the with blocks stop the servers and remove the directory. Killed
    # (SIGKILL): the reaper does both (servers and children are registered with it).
    reaper.exit_on_sigterm()
    guard = reaper.start()
    try:
        return _run(args)
    finally:
        guard.close()


def _run(args: argparse.Namespace) -> int:
    small, large = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
    messages = 5_000 if args.quick else 20_000
    chunk = 100_000
    with tempfile.TemporaryDirectory(prefix="ctcd-bench-batch-") as tmp:
        work = Path(tmp)
        reaper.remove_on_exit(work)
        os.environ.update(_env(work))
        print("registering the churn model and writing inputs...", flush=True)
        speedup = register_model(work)
        inputs = write_inputs(work, [small, large])
        figures: dict[str, Any] = {"quick": args.quick, "chunk_rows": chunk}
        figures["compiled"] = compiled = _compiled_cell(work, inputs[COMPILED_ROWS], chunk)
        compiled["compile_speedup"] = speedup
        figures["targets_missed_compiled"] = int(compiled["rows_s_ratio"] < 2) + int(
            compiled["peak_growth_ratio"] > 1.1)
        ratio = _run_child(work, "ratio", str(inputs[small]), str(work / "out-ratio.parquet"),
                           str(chunk), str(ROUNDS))
        figures["ratio"] = ratio
        figures["batch_vs_limit"] = ratio["batch_vs_limit"]
        print(f"limit: model.predict once on {small:,} rows in memory: "
              f"{ratio['limit_rows_per_s']:,.0f} rows/s; batch in-process on the same file: "
              f"{ratio['batch_rows_per_s']:,.0f} rows/s (best of {ROUNDS} each, alternated)",
              flush=True)
        for size in (small, large):
            run = _run_child(work, "batch", str(inputs[size]), str(work / f"out-{size}.parquet"),
                             str(chunk))
            figures[f"batch_{size}"] = run
            print(f"batch in-process {size:>12,} rows: {run['rows_per_s']:>10,.0f} rows/s, "
                  f"{run['seconds']:7.1f}s, peak RSS {run['peak_rss_mb']:,.0f} MB (after model "
                  f"load {run['rss_after_load_mb']:,.0f} MB, growth while scoring "
                  f"{run['peak_growth_mb']:,.0f} MB)", flush=True)
        small_run, large_run = figures[f"batch_{small}"], figures[f"batch_{large}"]
        figures["rss_large_vs_small"] = large_run["peak_rss_mb"] / small_run["peak_rss_mb"]
        figures["rss_growth_large_vs_small"] = (large_run["peak_growth_mb"]
                                                / small_run["peak_growth_mb"])
        figures["targets_missed"] = int(figures["batch_vs_limit"] < 0.8) + int(
            figures["rss_growth_large_vs_small"] > 1.2) + figures["targets_missed_compiled"]
        print(f"batch / limit: x{figures['batch_vs_limit']:.2f} (target >= 0.8); peak RSS "
              f"growth while scoring {large:,} / {small:,} rows: "
              f"x{figures['rss_growth_large_vs_small']:.2f} (target <= 1.2); total peak RSS "
              f"x{figures['rss_large_vs_small']:.2f}", flush=True)
        endpoint = _run_child(work, "endpoint", str(inputs[small]),
                              str(work / "out-endpoint.parquet"), str(chunk))
        figures["batch_endpoint"] = endpoint
        figures["endpoint_vs_in_process"] = (endpoint["rows_per_s"]
                                             / figures[f"batch_{small}"]["rows_per_s"])
        print(f"batch through the endpoint {small:,} rows: {endpoint['rows_per_s']:,.0f} rows/s "
              f"({endpoint['requests']} requests of {ENDPOINT_BATCH_ROWS:,} rows, "
              f"{ENDPOINT_CONCURRENCY} in flight): x{figures['endpoint_vs_in_process']:.2f} the "
              "in-process mode on the same rows", flush=True)
        stream = streaming_cell.bench_streaming(work, messages, model=MODEL,
                                                env=_env(work))
        figures["streaming"] = stream
        print(f"streaming: one scorer {stream['scorer_msgs_per_s']:,.0f} msgs/s vs HTTP one "
              f"client one row per request {stream['http_one_client_rows_per_s']:,.0f} rows/s "
              f"(x{stream['stream_vs_http']:.1f}); killed mid-batch holding "
              f"{stream['kill_held_pending']} entries: {stream['kill_lost']} lost of "
              f"{stream['kill_messages']:,} ({stream['kill_duplicates']} duplicates)",
              flush=True)
    saved = plots.save("batch", figures)
    print(f"figures: {saved}, plot: {saved.with_suffix('.png')}", flush=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
