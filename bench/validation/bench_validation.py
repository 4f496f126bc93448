"""How long the Great Expectations checkpoint of the churn data set takes, by partition size.

For each size: land a clean partition, copy it into a snapshot (ingest, bounded memory),
then validate it through the checkpoint (the first run of a fresh GX context, then a warm
one). Ends with one JSON line of all figures (seconds, and rows per second validated).
Usage: python bench/validation/bench_validation.py [rows ...] (default: 20000 1000000)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main(sizes: list[int]) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="ctcd-bench-validation-"))
    os.environ["CTCD_HOME"] = str(home)
    from ctcd.data.churn import generate_snapshot
    from ctcd.data.snapshots import snapshot_path
    from ctcd.data.sources import LandingSource, copy_partition
    from ctcd.data.spec import load_spec
    from ctcd.validation.checkpoint import validate_snapshot

    spec = load_spec("churn")
    day = datetime.now(UTC).date()
    figures: dict[str, float] = {}
    for rows in sizes:
        landing = home / f"landing-{rows}"
        folder = landing / f"date={day}"
        folder.mkdir(parents=True)
        generate_snapshot(day, rows, spec=spec).to_parquet(folder / "part-0.parquet", index=False)
        started = time.perf_counter()
        copied = copy_partition(
            LandingSource(f"file://{landing}", spec), day, spec,
            snapshot_path(home / "data", f"bench-{rows}", day),
        )
        figures[f"ingest_s_{rows}"] = round(time.perf_counter() - started, 3)
        for attempt in ("cold", "warm"):
            started = time.perf_counter()
            state = home / f"state-{rows}"  # the cold run creates the GX context, warm reuses it
            outcome = validate_snapshot(copied.path, spec, partition=day, home=state)
            seconds = time.perf_counter() - started
            assert outcome.success, outcome.failures
            figures[f"validate_{attempt}_s_{rows}"] = round(seconds, 3)
            print(f"{rows:>9} rows  {attempt}: GX checkpoint ({outcome.evaluated} expectations, "
                  f"Data Docs, JSON result) {seconds:7.2f} s", flush=True)
        figures[f"validate_rows_per_s_{rows}"] = round(rows / figures[f"validate_warm_s_{rows}"])
        print(f"{rows:>9} rows  ingest (copy to snapshot): {figures[f'ingest_s_{rows}']:7.2f} s")
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return figures


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [20_000, 1_000_000]
    print(json.dumps(main(sizes)))
