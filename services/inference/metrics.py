"""The inference service's Prometheus metrics: what Triton exports for its queue and batches.

Declared once on the default registry (one model per process); `etude.metrics` serves them.
Per request: its server-side latency and queue wait (answered ones) or its refusal reason; per
batch: its size and its executor's busy time; the queue depth is read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

# Sub-millisecond to seconds: a noop batch takes tens of microseconds, a 20M-item one a second.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = tuple(float(2**power) for power in range(13))  # 1 .. 4,096

REQUEST_LATENCY = Histogram(
    "etude_inference_request_latency_seconds",
    "Server-side time of an answered request, from its arrival to its answer.",
    buckets=LATENCY_BUCKETS_S,
)
QUEUE_WAIT = Histogram(
    "etude_inference_queue_wait_seconds",
    "Time an answered request waited from its arrival until its batch started in the model.",
    buckets=LATENCY_BUCKETS_S,
)
BATCH_SIZE = Histogram(
    "etude_inference_batch_size",
    "Requests per batch run in the model (the count is the number of batches).",
    buckets=BATCH_SIZE_BUCKETS,
)
QUEUE_DEPTH = Gauge("etude_inference_queue_depth", "Requests waiting for a batch (not those in the model).")
EXECUTOR_BUSY = Counter(
    "etude_inference_executor_busy_seconds",
    "Time each model executor spent running batches (busy / elapsed = its utilisation).",
    ["executor"],
)
REFUSALS = Counter(
    "etude_inference_refusals",
    "Requests answered with an error, by reason (the batcher's refusal or the invalid input).",
    ["reason"],
)


def watch_queue_depth(depth: Callable[[], int]) -> None:
    """The queue depth gauge reads `depth()` at each scrape (the batcher's queue_size)."""
    QUEUE_DEPTH.set_function(lambda: float(depth()))


# Each executor's labelled counter, looked up once: `labels()` costs more than the increment.
_busy_by_executor: dict[int, Counter] = {}


def batch_ran(executor: int, batch_size: int, model_ns: int) -> None:
    """Records one batch (the batcher's `on_batch` hook)."""
    BATCH_SIZE.observe(batch_size)
    busy = _busy_by_executor.get(executor)
    if busy is None:
        busy = _busy_by_executor[executor] = EXECUTOR_BUSY.labels(executor=str(executor))
    busy.inc(model_ns / 1e9)


def answered(latency_ns: int, queued_ns: int) -> None:
    """Records one answered request's server-side latency and queue wait."""
    REQUEST_LATENCY.observe(latency_ns / 1e9)
    QUEUE_WAIT.observe(queued_ns / 1e9)


def refused(reason: str) -> None:
    """Counts one request answered with an error, by `reason` (a short snake_case name)."""
    REFUSALS.labels(reason=reason).inc()
