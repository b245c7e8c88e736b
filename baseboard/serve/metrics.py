"""The server's Prometheus metrics, named like vLLM's (``vllm:`` becomes ``baseboard:``), in
a registry of their own so that several servers (or tests) in one process never share one.
Updated once per batch of the engine loop's events (async_engine.py), from one thread at a
time; the exposition may run on another.

The two latency histograms see every token (30 000 a second from a 0.5B model's batch of 32
on an H200). prometheus_client's Histogram.observe checks its state and takes a lock per
value; these take a batch's values under one lock and hand prometheus_client the counts
when it collects."""

from __future__ import annotations

import bisect
import itertools
import threading
from typing import Iterable, Iterator, Optional

# Seconds. Small models on a CPU answer within milliseconds, large ones on a busy GPU
# within minutes; both ends need buckets.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


class TokenBatch:
    """What one batch of the loop's events generated, gathered for ServerMetrics.tokens."""

    __slots__ = ("first_token_s", "prompt_tokens", "generated", "token_gaps_s",
                 "finish_reasons")

    def __init__(self) -> None:
        self.first_token_s: list[float] = []  # each first token's time since its arrival
        self.prompt_tokens = 0  # of the prompts whose first token came
        self.generated = 0
        self.token_gaps_s: list[float] = []  # between consecutive tokens of a completion
        self.finish_reasons: list[Optional[str]] = []


class BatchHistogram:
    """A histogram of ``buckets`` (upper bounds, inclusive as Prometheus's ``le``) whose
    values come in batches; a prometheus_client collector."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]):
        self.name, self.documentation = name, documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.lock = threading.Lock()

    def observe(self, values: Iterable[float]) -> None:
        with self.lock:
            for value in values:
                self.counts[bisect.bisect_left(self.bounds, value)] += 1
                self.sum += value

    def collect(self) -> Iterator:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        with self.lock:
            cumulative = list(itertools.accumulate(self.counts))
            total = self.sum
        bounds = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        yield HistogramMetricFamily(self.name, self.documentation,
                                    buckets=list(zip(bounds, cumulative)), sum_value=total)


class ServerMetrics:
    """Gauges of the engine's state after each step, counters of tokens and preemptions,
    and latency histograms."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = registry = CollectorRegistry()
        self.running = Gauge("baseboard:num_requests_running",
                             "Sequences in the running batch.", registry=registry)
        self.waiting = Gauge("baseboard:num_requests_waiting",
                             "Sequences waiting to be scheduled (new or preempted).",
                             registry=registry)
        self.kv_cache_usage = Gauge("baseboard:kv_cache_usage_perc",
                                    "Fraction of the KV-cache blocks in use (1 is full).",
                                    registry=registry)
        self.prompt_tokens = Counter("baseboard:prompt_tokens",
                                     "Prompt tokens of the requests that began generating.",
                                     registry=registry)
        self.generation_tokens = Counter("baseboard:generation_tokens", "Tokens generated.",
                                         registry=registry)
        self.preemptions = Counter("baseboard:num_preemptions",
                                   "Sequences preempted (their cache freed, to be recomputed).",
                                   registry=registry)
        self.request_success = Counter("baseboard:request_success",
                                       "Completions finished, by finish reason.",
                                       ["finished_reason"], registry=registry)
        self.time_to_first_token = BatchHistogram(
            "baseboard:time_to_first_token_seconds",
            "From a request's arrival to its first generated token.", TTFT_BUCKETS)
        self.time_per_output_token = BatchHistogram(
            "baseboard:time_per_output_token_seconds",
            "Between two consecutive tokens of one completion.", TPOT_BUCKETS)
        registry.register(self.time_to_first_token)
        registry.register(self.time_per_output_token)

    def engine_state(self, *, running: int, waiting: int, kv_cache_usage: float,
                     new_preemptions: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_cache_usage.set(kv_cache_usage)
        if new_preemptions:
            self.preemptions.inc(new_preemptions)

    def tokens(self, batch: TokenBatch) -> None:
        """The tokens of one batch of the loop's events."""
        if batch.first_token_s:
            self.time_to_first_token.observe(batch.first_token_s)
            self.prompt_tokens.inc(batch.prompt_tokens)
        if batch.generated:
            self.generation_tokens.inc(batch.generated)
        self.time_per_output_token.observe(batch.token_gaps_s)
        for reason in batch.finish_reasons:
            self.request_success.labels(finished_reason=reason or "unknown").inc()

    def exposition(self) -> tuple[bytes, str]:
        """(the text format, its content type) for GET /metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
