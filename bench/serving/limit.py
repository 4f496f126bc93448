"""The in-process limit of one model, measured in its own process next to the servers.

The limit of a benchmark cell is the rows/s the model's own ``predict`` reaches when called
directly, back to back, on batches of the sizes the server formed in that cell. It is
measured right after the cell (so the machine's other load is the same as the cell saw),
in a process of its own with the servers' single-thread settings (``OMP_NUM_THREADS=1``,
inherited), on the model the servers load, loaded the way the server loads it
(``ctcd.serving.model.load`` and ``warm``), and called on the input the server builds (a checked
``Table``'s ``to_model_input()``), built before timing: only ``predict`` is timed.

Run by :class:`Limit` below: ``python limit.py MODEL_DIR SAMPLE_PICKLE``; it prints
``ready``, then answers each line ``{"sizes": [[rows, calls], ...], "seconds": s}`` on stdin with
``{"rows_s": r, "rows_cpu_s": c, "per_call_s": {"rows": s, ...}}``: the rows/s of a run of
predicts in that mix, ``sum(calls * rows) / sum(calls * seconds_per_call(rows))``, and the
same per CPU second of predict (not slowed by other processes on the machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from ctcd import reaper
from ctcd.stack.processes import stop_process_tree


def _inputs(loaded: Any, sample: Any) -> Any:
    """A function of ``rows`` giving the model input the server would build for that many
    rows of the sample (repeated as needed)."""
    import numpy as np

    from ctcd.serving.schema import check_columns, check_matrix

    schema = loaded.schema
    cache: dict[int, Any] = {}

    def build(rows: int) -> Any:
        if rows not in cache:
            part = sample.iloc[np.arange(rows) % len(sample)].reset_index(drop=True)
            table = None
            if schema.tensor is None:
                table = check_matrix(schema, list(part.columns), part.to_numpy().tolist())
                if table is None:
                    table = check_columns(schema, {c: part[c].tolist() for c in part.columns},
                                          "")
            else:
                from ctcd.serving.schema import check_tensor

                table = check_tensor(schema.tensor, part.to_numpy().tolist(), "")
            cache[rows] = table.to_model_input()
        return cache[rows]

    return build


def _seconds_per_call(predict: Any, data: Any, budget: float) -> tuple[float, float]:
    """Wall and CPU seconds (of this thread: predict runs on one) per call."""
    predict(data)  # warm (first call of a size pays allocation)
    calls, started, cpu = 0, time.perf_counter(), time.thread_time()
    while calls < 3 or time.perf_counter() - started < budget:
        predict(data)
        calls += 1
    return (time.perf_counter() - started) / calls, (time.thread_time() - cpu) / calls


def main() -> int:
    import pandas as pd

    from ctcd.serving.model import load

    model_dir, sample_path = sys.argv[1], Path(sys.argv[2])
    loaded = load(model_dir, compiled=False)  # the limit of the uncompiled servers
    loaded.warm()  # as the server does: a model's array calls are set up here
    sample = pd.read_pickle(sample_path)  # written by the benchmark itself
    build = _inputs(loaded, sample)
    print("ready", flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        sizes = [(int(rows), float(calls)) for rows, calls in ask["sizes"] if calls > 0]
        total_calls = sum(calls for _, calls in sizes)
        per_call: dict[int, tuple[float, float]] = {}
        for rows, calls in sizes:
            # each size gets time in proportion to its share of the calls, at least 0.1 s
            budget = max(0.1, ask["seconds"] * calls / total_calls)
            per_call[rows] = _seconds_per_call(loaded.predict, build(rows), budget)
        wall = sum(calls * per_call[rows][0] for rows, calls in sizes)
        cpu = sum(calls * per_call[rows][1] for rows, calls in sizes)
        rows_total = sum(calls * rows for rows, calls in sizes)
        print(json.dumps({"rows_s": rows_total / wall, "rows_cpu_s": rows_total / cpu,
                          "per_call_s": {str(rows): per_call[rows][0] for rows in per_call}}),
              flush=True)
    return 0


class Limit:
    """The model's in-process limit, measured on request in its own process (``limit.py``):
    the model the servers load, the input the server builds, one native thread."""

    def __init__(self, kind: str, model: dict[str, Any], work: Path, seconds: float) -> None:
        # predict time per measurement (split over the batch sizes): a third of a cell
        self.seconds = max(1.0, seconds / 3)
        sample = work / f"sample-{kind}.pkl"
        model["sample"].to_pickle(sample)
        self.log = work / f"limit-{kind}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__)), str(model["dir"]),
                 str(sample)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, start_new_session=True)
        reaper.watch(self.proc.pid)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"limit process did not start; see {self.log}:\n"
                               f"{self.log.read_text()[-2000:]}")

    def rows_s(self, sizes: list[list[float]]) -> tuple[float, float]:
        """Rows per second and per CPU second of predict, called back to back on this mix
        of ``[[rows, calls], ...]``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"sizes": sizes, "seconds": self.seconds}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"limit process died; see {self.log}:\n"
                               f"{self.log.read_text()[-2000:]}")
        doc = json.loads(answer)
        return float(doc["rows_s"]), float(doc["rows_cpu_s"])

    def close(self) -> None:
        stop_process_tree(self.proc.pid)


if __name__ == "__main__":
    sys.exit(main())
