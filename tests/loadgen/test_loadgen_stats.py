"""Latency histograms: percentiles as HdrHistogram defines them, read without walking buckets."""

from __future__ import annotations

import numpy as np
from etude.services.loadgen.stats import (
    HIGHEST_US,
    LOWEST_US,
    SIGNIFICANT_DIGITS,
    LatencyHistogram,
    record_columns_us,
)
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=10 * HIGHEST_US), min_size=1, max_size=300),
    percentile=st.sampled_from([0.1, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0]),
)
def test_percentiles_match_hdrhistogram_and_stay_within_its_precision(
    values: list[int], percentile: float
) -> None:
    histogram = LatencyHistogram()
    reference = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for value in values:
        histogram.record_us(value)
        reference.record_value(min(max(value, LOWEST_US), HIGHEST_US))
    value_us = reference.get_value_at_percentile(percentile)
    assert histogram.percentile_ms(percentile) == value_us / 1000.0
    clamped = sorted(min(max(value, LOWEST_US), HIGHEST_US) for value in values)
    exact = clamped[max(1, int(percentile / 100 * len(clamped) + 0.5)) - 1]
    assert exact <= value_us <= exact * (1 + 10.0**-SIGNIFICANT_DIGITS) + 1


def test_summary_of_an_empty_histogram_is_all_zero() -> None:
    summary = LatencyHistogram().summary()
    assert summary.count == 0
    assert summary.p99_ms == 0.0


def test_summary_mean_is_exact_and_max_is_the_top_of_its_bucket() -> None:
    histogram = LatencyHistogram()
    for value_us in (1_000, 2_000, 6_000):
        histogram.record_us(value_us)
    summary = histogram.summary()
    assert summary.count == 3
    assert summary.mean_ms == 3.0
    assert summary.p50_ms == 2.0
    assert 6.0 <= summary.max_ms <= 6.0 * 1.001


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.integers(min_value=-5, max_value=10 * HIGHEST_US), min_size=0, max_size=300))
def test_recording_a_batch_fills_the_same_buckets_as_recording_one_by_one(values: list[int]) -> None:
    one_by_one, batched = LatencyHistogram(), LatencyHistogram()
    for value in values:
        one_by_one.record_us(value)
    batched.record_many_us(values[: len(values) // 2])
    batched.record_many_us(values[len(values) // 2 :])
    assert batched.count == one_by_one.count
    assert batched.summary() == one_by_one.summary()
    assert batched.percentiles_ms([0.1, 50, 99.9, 100]) == one_by_one.percentiles_ms([0.1, 50, 99.9, 100])


def test_a_reset_histogram_reads_as_a_new_one_and_records_afresh() -> None:
    used, fresh = LatencyHistogram(), LatencyHistogram()
    for value_us in (5, 70_000, 3_000_000):
        used.record_us(value_us)
    used.reset()
    assert used.summary() == fresh.summary() == LatencyHistogram().summary()
    for histogram in (used, fresh):
        histogram.record_many_us([1_000, 2_000, 6_000])
    assert used.summary() == fresh.summary()
    assert used.summary().count == 3


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.tuples(*[st.integers(min_value=-5, max_value=10 * HIGHEST_US)] * 3), min_size=0, max_size=200
    )
)
def test_recording_columns_fills_each_histogram_as_recording_its_column_alone(
    rows: list[tuple[int, int, int]],
) -> None:
    together = [LatencyHistogram() for _ in range(3)]
    alone = [LatencyHistogram() for _ in range(3)]
    record_columns_us(together, np.array(rows, dtype=np.int64).reshape(len(rows), 3))
    for column, histogram in enumerate(alone):
        histogram.record_many_us([row[column] for row in rows])
    for column in range(3):
        assert together[column].summary() == alone[column].summary()
        assert together[column].percentiles_ms([1, 50, 99.9]) == alone[column].percentiles_ms([1, 50, 99.9])
