"""The load generator's Prometheus metrics: requests sent and not sent, responses by status.

Published from a run's running totals once per tick and at its end (no cost per request);
counters over every run this process served. `etude.metrics` serves them.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import NamedTuple

from prometheus_client import Counter

REQUESTS_SENT = Counter("etude_loadgen_requests_sent", "Requests sent to the inference endpoint.")
REQUESTS_NOT_SENT = Counter(
    "etude_loadgen_requests_not_sent",
    "Requests the ramp asked for but backpressure or a lack of idle sessions kept back.",
)
RESPONSES = Counter(
    "etude_loadgen_responses",
    "Requests that ended, by status (OK, a gRPC status name, CANCELLED or CLIENT_ERROR).",
    ["status"],
)


class RunTotals(NamedTuple):
    """A run's counts so far."""

    sent: int
    not_sent: int
    responses_by_status: Mapping[str, int]


class RunPublisher:
    """Adds what one run counted since the last `publish` to the process's counters."""

    def __init__(self) -> None:
        self._published = RunTotals(0, 0, {})

    def publish(self, totals: RunTotals) -> None:
        previous = self._published
        REQUESTS_SENT.inc(totals.sent - previous.sent)
        REQUESTS_NOT_SENT.inc(totals.not_sent - previous.not_sent)
        grown = Tally(totals.responses_by_status)
        grown.subtract(previous.responses_by_status)
        for status, count in grown.items():
            if count > 0:
                RESPONSES.labels(status=status).inc(count)
        self._published = RunTotals(totals.sent, totals.not_sent, dict(totals.responses_by_status))
