"""The batch cost model: prior, moving estimates per bucket, interpolation, monotone bounds."""

from __future__ import annotations

import pytest
from etude.services.inference.cost_model import DEVIATIONS, BatchCostModel

MS = 1_000_000


def test_answers_the_prior_before_any_batch_ran() -> None:
    model = BatchCostModel(prior_ms=3.0)
    assert not model.samples_seen
    assert model.estimate_ns(1) == model.estimate_ns(500) == 3 * MS


def test_a_bucket_follows_its_recent_batches_and_their_spread() -> None:
    model = BatchCostModel(smoothing=0.5)
    model.observe(8, 10 * MS)
    assert model.estimate_ns(8) == 10 * MS
    model.observe(8, 20 * MS)
    # Mean halfway (15 ms: smoothing 0.5), mean deviation 5 ms, estimate mean + 2 deviations.
    assert model.estimate_ns(8) == (15 + DEVIATIONS * 5) * MS
    for _ in range(40):
        model.observe(8, 15 * MS)
    assert model.estimate_ns(8) == pytest.approx(15 * MS)  # steady batches: the spread fades


def test_knows_which_size_buckets_it_has_measured() -> None:
    model = BatchCostModel()
    model.observe(5, 10 * MS)  # the bucket 5..8
    assert [model.has_seen(size) for size in (4, 5, 8, 9)] == [False, True, True, False]


def test_cpu_time_is_kept_apart_from_run_time() -> None:
    model = BatchCostModel()
    assert model.cpu_estimate_ns(4) is None
    model.observe(4, 10 * MS, cpu_ns=2 * MS)  # waited 8 ms for the GIL or a device
    assert (model.cpu_estimate_ns(3), model.estimate_ns(3)) == (2 * MS, 10 * MS)
    model.observe(1, 5 * MS)  # no CPU figure: its run time counts
    assert model.cpu_estimate_ns(1) == 5 * MS


def test_sizes_between_two_learnt_buckets_are_interpolated() -> None:
    model = BatchCostModel()
    model.observe(4, 10 * MS)
    model.observe(16, 34 * MS)
    assert model.estimate_ns(10) == pytest.approx(22 * MS)


def test_smaller_batches_than_any_seen_cost_the_smallest_and_larger_ones_scale_up() -> None:
    model = BatchCostModel()
    model.observe(8, 16 * MS)
    assert model.estimate_ns(1) == 16 * MS
    assert model.estimate_ns(32) == pytest.approx(64 * MS)


def test_estimates_never_fall_with_the_batch_size_even_when_samples_are_noisy() -> None:
    model = BatchCostModel()
    model.observe(4, 20 * MS)
    model.observe(64, 12 * MS)  # a lucky big batch
    sizes = range(1, 200)
    costs = [model.estimate_ns(size) for size in sizes]
    assert costs == sorted(costs)


@pytest.mark.parametrize("knobs", [{"prior_ms": -1.0}, {"smoothing": 0.0}, {"smoothing": 1.5}])
def test_rejects_nonsensical_knobs(knobs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(knobs))):
        BatchCostModel(**knobs)
