"""Where a request arriving now would run: the waiting queue seen as the batches it will form.

The batcher cuts a batch (FIFO) at `max_batch_size` or where one more request would make it
run past its earliest deadline; the plan mirrors that rule as requests arrive, so that an
admitted request is not later squeezed into a batch its neighbours cannot afford. Start times
come from list scheduling the planned batches on the executors, costs from the cost model.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from dataclasses import dataclass

from .cost_model import BatchCostModel

# Planned batches scheduled one by one in a forecast; any before them are spread evenly.
SCHEDULED_BATCHES = 64


@dataclass(slots=True)
class _PlannedBatch:
    size: int
    earliest_deadline_ns: int | None


@dataclass(frozen=True, slots=True)
class Forecast:
    """When the batch of a request arriving now would start, what it costs, and its size."""

    start_ns: float
    cost_ns: float
    batch_size: int
    joins_last_batch: bool

    @property
    def finish_ns(self) -> float:
        return self.start_ns + self.cost_ns


def earliest(first_ns: int | None, second_ns: int | None) -> int | None:
    """The earlier of two deadlines, None being no deadline."""
    if first_ns is None:
        return second_ns
    return first_ns if second_ns is None else min(first_ns, second_ns)


class BatchPlan:
    """The queue's requests grouped into the batches they are expected to run in.

    `headroom`: the fraction of a batch's estimated cost kept in reserve against its deadline.
    The plan only estimates; the batcher forms the real batches by the same rule when they run.
    """

    def __init__(self, cost_model: BatchCostModel, max_batch_size: int, headroom: float) -> None:
        self._cost_model = cost_model
        self._max_batch_size = max_batch_size
        self._headroom = headroom
        self._batches: collections.deque[_PlannedBatch] = collections.deque()
        self._requests = 0

    def affordable(self, start_ns: float, batch_size: int, deadline_ns: int | None) -> bool:
        """Whether a batch of `batch_size` starting at `start_ns` ends, with headroom, by the deadline."""
        if deadline_ns is None:
            return True
        return start_ns + self._cost_model.estimate_ns(batch_size) * (1 + self._headroom) <= deadline_ns

    def forecast(self, free_at_ns: list[float], deadline_ns: int | None) -> Forecast:
        """Where a request with `deadline_ns` arriving now would run; `free_at_ns`: when each
        executor is expected to be free (now for an idle one)."""
        estimate = self._cost_model.estimate_ns
        free_at = sorted(free_at_ns)
        ahead = len(self._batches) - 1  # the batches before the last one, which may take it
        if ahead > SCHEDULED_BATCHES:
            # A deep queue of small batches: spread the oldest ones' work evenly (a fluid estimate).
            spread = ahead - SCHEDULED_BATCHES
            spread_requests = self._requests - sum(
                batch.size for batch in itertools.islice(reversed(self._batches), SCHEDULED_BATCHES + 1)
            )
            work_ns = spread * estimate(max(1, round(spread_requests / spread)))
            free_at = [t + work_ns / len(free_at) for t in free_at]
        for batch in itertools.islice(self._batches, max(0, ahead - SCHEDULED_BATCHES), max(0, ahead)):
            heapq.heappush(free_at, heapq.heappop(free_at) + estimate(batch.size))
        if self._batches:
            last = self._batches[-1]
            last_start_ns = heapq.heappop(free_at)
            size = last.size + 1
            if size <= self._max_batch_size and self.affordable(
                last_start_ns, size, earliest(last.earliest_deadline_ns, deadline_ns)
            ):
                return Forecast(last_start_ns, estimate(size), size, joins_last_batch=True)
            heapq.heappush(free_at, last_start_ns + estimate(last.size))
        return Forecast(heapq.heappop(free_at), estimate(1), 1, joins_last_batch=False)

    def add(self, forecast: Forecast, deadline_ns: int | None) -> None:
        """Records an admitted request where `forecast` placed it."""
        self._requests += 1
        if forecast.joins_last_batch and self._batches:
            last = self._batches[-1]
            last.size += 1
            last.earliest_deadline_ns = earliest(last.earliest_deadline_ns, deadline_ns)
        else:
            self._batches.append(_PlannedBatch(1, deadline_ns))

    def remove_first(self) -> None:
        """The oldest request left the queue (ran, dropped or withdrawn)."""
        if not self._batches:
            return
        self._requests -= 1
        first = self._batches[0]
        first.size -= 1
        if first.size == 0:
            self._batches.popleft()

    def clear(self) -> None:
        self._batches.clear()
        self._requests = 0
