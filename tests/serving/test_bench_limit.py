"""The benchmark's reading of the batch histogram: the mix of batch sizes its limit is
measured on (bench/serving/load.py)."""

from __future__ import annotations

from bench.serving.load import batch_sizes, parse_batch_histogram
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ctcd.serving.metrics import BATCH_BUCKETS


def _exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_mix_follows_the_buckets_and_the_exact_mean() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("ctcd_model_batch_rows", "rows", ("model", "version"),
                          buckets=BATCH_BUCKETS, registry=registry)
    for _ in range(50):  # before the cell: not part of its mix
        histogram.labels("m", "1").observe(1)
    before = parse_batch_histogram(_exposition(registry))
    formed = [7] * 30 + [8] * 10 + [3] * 5 + [1000] * 4 + [900] + [5000] * 2
    for rows in formed:
        # two versions (traffic split) count together
        histogram.labels("m", "1" if rows % 2 else "2").observe(rows)
    after = parse_batch_histogram(_exposition(registry))

    mix = sorted(batch_sizes(before, after))

    # one size per bucket that got calls, inside that bucket, with its calls
    assert [calls for _, calls in mix] == [5, 40, 5, 2]
    (small, _), (sevens, _), (thousands, _), (huge, _) = mix
    assert 3 <= small <= 4            # (2, 4]
    assert 5 <= sevens <= 8           # (4, 8]
    assert 513 <= thousands <= 1024   # (512, 1024]
    assert huge > 4096                # above the last bound
    mean = sum(rows * calls for rows, calls in mix) / len(formed)
    assert abs(mean - sum(formed) / len(formed)) / (sum(formed) / len(formed)) < 0.02


def test_one_size_is_that_size() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("ctcd_model_batch_rows", "rows", ("model", "version"),
                          buckets=BATCH_BUCKETS, registry=registry)
    before = parse_batch_histogram(_exposition(registry))
    for _ in range(20):
        histogram.labels("m", "1").observe(1)
    assert batch_sizes(before, parse_batch_histogram(_exposition(registry))) == [
        [1.0, 20.0]]


def test_no_predicts_no_mix() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("ctcd_model_batch_rows", "rows", ("model", "version"),
                          buckets=BATCH_BUCKETS, registry=registry)
    histogram.labels("m", "1").observe(3)
    reading = parse_batch_histogram(_exposition(registry))
    assert batch_sizes(reading, reading) == []
