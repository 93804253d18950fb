"""Latency histograms (HdrHistogram, microseconds) and their LatencyPercentiles summary.

Range 1 us .. 1 hour at 3 significant digits: a percentile is read back at the top of its
value's bucket, at most 0.1% above the recorded value; values outside the range are clamped.
The mean is exact (a running sum), not read from the buckets. Values can be recorded one at a
time or, on the load generator's hot path, a batch at a time (one numpy pass instead of a
Python call per value).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from hdrh.histogram import HdrHistogram

from etude.v1 import loadgen_pb2

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
_ONE = np.uint64(1)


class LatencyHistogram:
    """Records latencies in microseconds; reads percentiles back in milliseconds."""

    __slots__ = ("_counts", "_histogram", "_sum_us")

    def __init__(self) -> None:
        self._histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        # A zero-copy view of the bucket counts: hdrh's own percentile lookup walks the buckets
        # in Python (milliseconds per call), which would stall the event loop every tick. Viewed
        # once more as plain uint64 and counted up by a uint64 one (_ONE): with the dtype ctypes
        # gives, or a Python int to add, np.add.at leaves its fast path (17 us instead of 1.7
        # for 256 values; seven histograms take a batch every 256 answers).
        self._counts = np.ctypeslib.as_array(self._histogram.counts).view(np.uint64)
        self._sum_us = 0

    def reset(self) -> None:
        """Empty again, in one numpy pass: a new histogram allocates its 23,552 buckets (about a
        millisecond), and hdrh's own reset() zeroes them one Python call at a time."""
        self._counts.fill(0)
        histogram = self._histogram
        histogram.total_count = 0
        histogram.min_value = sys.maxsize
        histogram.max_value = 0
        self._sum_us = 0

    def record_us(self, value_us: int) -> None:
        # 0 us happens (a server that answers within the same microsecond): clamp, not drop.
        value_us = min(max(value_us, LOWEST_US), HIGHEST_US)
        self._histogram.record_value(value_us)
        self._sum_us += value_us

    def record_many_us(self, values_us: Sequence[int] | np.ndarray) -> None:
        """Records every value of `values_us` (clamped like `record_us`), in the same buckets
        HdrHistogram's own record_value would use."""
        if len(values_us) == 0:
            return
        values = np.clip(np.asarray(values_us, dtype=np.int64), LOWEST_US, HIGHEST_US)
        low, high, total = int(values.min()), int(values.max()), int(values.sum())
        self._add(values, self._bucket_indices(values), low, high, total)

    def _bucket_indices(self, values: np.ndarray) -> np.ndarray:
        """HdrHistogram's _counts_index_for, vectorised over `values` (clamped, any shape): the
        bucket is the power of two holding the value (frexp's exponent is the bit length, exact
        for values below 2**53)."""
        histogram = self._histogram
        _, bit_length = np.frexp((values | histogram.sub_bucket_mask).astype(np.float64))
        bucket = (
            bit_length.astype(np.int64)
            - histogram.unit_magnitude
            - (histogram.sub_bucket_half_count_magnitude + 1)
        )
        sub_bucket = values >> (bucket + histogram.unit_magnitude)
        return ((bucket + 1) << histogram.sub_bucket_half_count_magnitude) + (
            sub_bucket - histogram.sub_bucket_half_count
        )

    def _add(self, values: np.ndarray, indices: np.ndarray, low: int, high: int, total: int) -> None:
        np.add.at(self._counts, indices, _ONE)
        histogram = self._histogram
        histogram.total_count += len(values)
        histogram.min_value = min(histogram.min_value, low)
        histogram.max_value = max(histogram.max_value, high)
        self._sum_us += total

    @property
    def count(self) -> int:
        return int(self._histogram.total_count)

    def percentiles_ms(self, percentiles: list[float]) -> list[float]:
        """The values at `percentiles` (0 < p <= 100) in ms, as HdrHistogram defines them
        (the top of the bucket holding the value of rank round(p * n)); 0 when empty."""
        if self.count == 0:
            return [0.0] * len(percentiles)
        cumulative = np.cumsum(self._counts)
        values = []
        for percentile in percentiles:
            rank = self._histogram.get_target_count_at_percentile(percentile)
            index = int(np.searchsorted(cumulative, rank, side="left"))
            value_us = self._histogram.get_highest_equivalent_value(
                self._histogram.get_value_from_index(index)
            )
            values.append(value_us / 1000.0)
        return values

    def percentile_ms(self, percentile: float) -> float:
        return self.percentiles_ms([percentile])[0]

    def summary(self) -> loadgen_pb2.LatencyPercentiles:
        if self.count == 0:
            return loadgen_pb2.LatencyPercentiles()
        p50, p90, p99, p999 = self.percentiles_ms([50, 90, 99, 99.9])
        return loadgen_pb2.LatencyPercentiles(
            count=self.count,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            p999_ms=p999,
            max_ms=self._histogram.get_max_value() / 1000.0,
            mean_ms=self._sum_us / self.count / 1000.0,
        )


def record_columns_us(histograms: Sequence[LatencyHistogram], columns_us: np.ndarray) -> None:
    """Records column j of `columns_us` (n rows, one column per histogram) into histograms[j]:
    the buckets of every column in one numpy pass, so that a batch costs a few calls, not a
    dozen per histogram (the load generator's event loop does this every 256 answers)."""
    if len(columns_us) == 0 or not histograms:
        return
    values = np.clip(np.asarray(columns_us, dtype=np.int64), LOWEST_US, HIGHEST_US)
    indices = histograms[0]._bucket_indices(values)  # every LatencyHistogram has the same layout
    lows, highs = values.min(axis=0).tolist(), values.max(axis=0).tolist()
    totals = values.sum(axis=0).tolist()
    for column, histogram in enumerate(histograms):
        histogram._add(values[:, column], indices[:, column], lows[column], highs[column], totals[column])
