"""What a batch of each size costs in the model, learnt online from the batches that really ran.

One moving estimate per power-of-two bucket of batch sizes: exponentially weighted means of
the batch size, the run time and the run time's deviation, the estimate being the mean plus
DEVIATIONS deviations (TCP's retransmission timer, RFC 6298, does the same with round trips):
a noisy machine makes it cautious. A size between two learnt buckets is interpolated, one
outside them bounded conservatively. Before any batch has run, a fixed prior answers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# Weight of the newest sample: a few batches move the estimate, one outlier does not own it.
DEFAULT_SMOOTHING = 0.25
# Deviations added to the mean: a batch rarely runs longer than this on the same machine.
DEVIATIONS = 2.0
# Until the first batch ran: cheap enough to admit the first requests, which then teach it.
DEFAULT_PRIOR_MS = 1.0


@dataclass(slots=True)
class _Bucket:
    mean_size: float
    mean_cost_ns: float
    mean_deviation_ns: float = 0.0
    # CPU time of the thread that ran the batch: its cost without waits for the GIL.
    mean_cpu_ns: float = 0.0

    @property
    def cautious_cost_ns(self) -> float:
        return self.mean_cost_ns + DEVIATIONS * self.mean_deviation_ns


class BatchCostModel:
    """Estimated model time of a batch by size, from `observe(batch_size, cost_ns)` samples.

    An estimate is a bucket's mean run time plus DEVIATIONS mean deviations. Estimates never
    decrease with the batch size. Between two learnt buckets the cost is
    interpolated linearly; below the smallest it is the smallest's (a smaller batch costs no
    more); above the largest it grows in proportion to the size (per-item cost only falls with
    batching, so this errs on the slow side). Not thread-safe: one event loop owns it.
    """

    def __init__(self, *, prior_ms: float = DEFAULT_PRIOR_MS, smoothing: float = DEFAULT_SMOOTHING) -> None:
        if prior_ms < 0:
            raise ValueError(f"prior_ms must be >= 0, got {prior_ms}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self._prior_ns = prior_ms * 1e6
        self._smoothing = smoothing
        # bucket exponent e (sizes 2^(e-1)+1 .. 2^e) -> its moving means
        self._buckets: dict[int, _Bucket] = {}
        # (mean_size, mean_cost_ns) of each bucket, by size, cost made monotone: rebuilt on observe
        self._points: list[tuple[float, float]] = []
        self._sizes: list[float] = []

    @property
    def samples_seen(self) -> bool:
        """Whether any batch has been observed (otherwise estimates are the prior)."""
        return bool(self._buckets)

    def has_seen(self, batch_size: int) -> bool:
        """Whether batches in the same power-of-two bucket as `batch_size` have been observed."""
        return batch_size >= 1 and (batch_size - 1).bit_length() in self._buckets

    def cpu_estimate_ns(self, batch_size: int) -> float | None:
        """Mean CPU time of batches in `batch_size`'s bucket; None before one was observed."""
        bucket = self._buckets.get((batch_size - 1).bit_length()) if batch_size >= 1 else None
        return None if bucket is None else bucket.mean_cpu_ns

    def observe(self, batch_size: int, cost_ns: int, cpu_ns: int | None = None) -> None:
        """Records that a batch of `batch_size` requests ran for `cost_ns` in the model (using
        `cpu_ns` of CPU time, when known; else its run time counts as CPU time)."""
        if batch_size < 1:
            return
        cpu_ns = cost_ns if cpu_ns is None else cpu_ns
        exponent = (batch_size - 1).bit_length()
        bucket = self._buckets.get(exponent)
        if bucket is None:
            self._buckets[exponent] = _Bucket(float(batch_size), float(cost_ns), mean_cpu_ns=float(cpu_ns))
        else:
            weight = self._smoothing
            bucket.mean_size += weight * (batch_size - bucket.mean_size)
            deviation_ns = abs(cost_ns - bucket.mean_cost_ns)
            bucket.mean_deviation_ns += weight * (deviation_ns - bucket.mean_deviation_ns)
            bucket.mean_cost_ns += weight * (cost_ns - bucket.mean_cost_ns)
            bucket.mean_cpu_ns += weight * (cpu_ns - bucket.mean_cpu_ns)
        self._rebuild()

    def estimate_ns(self, batch_size: int) -> float:
        """Expected model time of a batch of `batch_size` requests, in nanoseconds."""
        if batch_size < 1:
            return 0.0
        if not self._points:
            return self._prior_ns
        index = bisect.bisect_left(self._sizes, batch_size)
        if index == 0:
            return self._points[0][1]
        if index == len(self._points):
            size, cost = self._points[-1]
            return cost * batch_size / size
        (size_low, cost_low), (size_high, cost_high) = self._points[index - 1], self._points[index]
        return cost_low + (cost_high - cost_low) * (batch_size - size_low) / (size_high - size_low)

    def _rebuild(self) -> None:
        points: list[tuple[float, float]] = []
        for exponent in sorted(self._buckets):
            bucket = self._buckets[exponent]
            # Noise can make a bigger bucket look cheaper: never let the estimate fall.
            cost = max(bucket.cautious_cost_ns, points[-1][1] if points else 0.0)
            if points and bucket.mean_size <= points[-1][0]:
                continue  # sizes overlap after smoothing (cannot happen across buckets, but be safe)
            points.append((bucket.mean_size, cost))
        self._points = points
        self._sizes = [size for size, _ in points]
