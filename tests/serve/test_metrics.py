"""The server's batch-fed histograms against prometheus_client's own Histogram."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from baseboard.serve.metrics import TPOT_BUCKETS, BatchHistogram


def test_a_batch_histogram_exposes_what_prometheus_client_s_histogram_does():
    """The same values, observed in uneven batches here and one by one by the library's
    Histogram, give the same exposition text: bucket bounds (``le`` is inclusive: values
    on a bound fall into it), cumulative counts, count and sum."""
    rng = random.Random(0)
    values = [rng.choice((rng.uniform(0, 0.2), rng.choice(TPOT_BUCKETS), 100.0))
              for _ in range(500)]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("baseboard:gap_seconds", "Gaps.", TPOT_BUCKETS)
    ours.register(batched)
    reference = Histogram("baseboard:gap_seconds", "Gaps.", buckets=TPOT_BUCKETS,
                          registry=theirs)
    start = 0
    while start < len(values):
        size = rng.randint(0, 40)
        batched.observe(values[start:start + size])
        start += size
    for value in values:
        reference.observe(value)

    def lines(registry):
        return [line for line in generate_latest(registry).decode().splitlines()
                if "_created" not in line]

    assert lines(ours) == lines(theirs)
