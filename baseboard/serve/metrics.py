"""The server's Prometheus metrics, named like vLLM's (``vllm:`` becomes ``baseboard:``), in
a registry of their own so that several servers (or tests) in one process never share one.
Updated from the engine thread; prometheus_client's metrics are thread-safe."""

from __future__ import annotations

from typing import Optional

# Seconds. Small models on a CPU answer within milliseconds, large ones on a busy GPU
# within minutes; both ends need buckets.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


class ServerMetrics:
    """Gauges of the engine's state after each step, counters of tokens and preemptions,
    and latency histograms."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.time_to_first_token = Histogram(
            "baseboard:time_to_first_token_seconds",
            "From a request's arrival to its first generated token.",
            buckets=TTFT_BUCKETS, registry=registry)
        self.time_per_output_token = Histogram(
            "baseboard:time_per_output_token_seconds",
            "Between two consecutive tokens of one completion.",
            buckets=TPOT_BUCKETS, registry=registry)

    def engine_state(self, *, running: int, waiting: int, kv_cache_usage: float,
                     new_preemptions: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_cache_usage.set(kv_cache_usage)
        if new_preemptions:
            self.preemptions.inc(new_preemptions)

    def first_token(self, seconds: float, num_prompt_tokens: int) -> None:
        """A prompt's first token, ``seconds`` after its request arrived."""
        self.time_to_first_token.observe(seconds)
        self.prompt_tokens.inc(num_prompt_tokens)

    def tokens(self, count: int, since_previous: Optional[float]) -> None:
        """``count`` new tokens of one completion, ``since_previous`` seconds after its
        previous token (None for its first)."""
        self.generation_tokens.inc(count)
        if since_previous is not None:
            self.time_per_output_token.observe(since_previous)

    def finished(self, reason: Optional[str]) -> None:
        self.request_success.labels(finished_reason=reason or "unknown").inc()

    def exposition(self) -> tuple[bytes, str]:
        """(the text format, its content type) for GET /metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
