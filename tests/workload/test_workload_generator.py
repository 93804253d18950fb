"""The workload generator's contract: determinism, ranges, batching, exact totals, validation."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from etude.services.workload.generator import (
    DEFAULT_MAX_SESSION_LENGTH,
    DEFAULT_SESSIONS_PER_BATCH,
    MAX_CATALOG_SIZE,
    MAX_CLICKS_PER_BATCH,
    InvalidWorkloadSpec,
    ItemPopularity,
    SessionBatch,
    SessionGenerator,
    StreamRequest,
    SyntheticWorkload,
    draw_power_law,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etude.v1 import workload_pb2

WORKLOAD = SyntheticWorkload(catalog_size=5_000, alpha_length=2.0, alpha_clicks=1.6, seed=11)


def _concatenate(batches: list[SessionBatch]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.concatenate([batch.lengths for batch in batches])
    item_ids = np.concatenate([batch.item_ids for batch in batches])
    return lengths, item_ids


def _take_sessions(generator: SessionGenerator, per_batch: int, sessions: int) -> list[SessionBatch]:
    batches = [generator.next_batch(per_batch) for _ in range(sessions // per_batch)]
    if sessions % per_batch:
        batches.append(generator.next_batch(sessions % per_batch))
    return batches


def test_same_seed_gives_the_same_sessions() -> None:
    first = SessionGenerator(WORKLOAD).next_batch(2_000)
    second = SessionGenerator(WORKLOAD).next_batch(2_000)
    np.testing.assert_array_equal(first.lengths, second.lengths)
    np.testing.assert_array_equal(first.item_ids, second.item_ids)
    np.testing.assert_array_equal(
        ItemPopularity.for_workload(WORKLOAD).click_counts,
        SessionGenerator(WORKLOAD).popularity.click_counts,
    )


def test_different_seeds_give_different_sessions_and_popularity() -> None:
    other = SyntheticWorkload(5_000, 2.0, 1.6, seed=12)
    first = SessionGenerator(WORKLOAD)
    second = SessionGenerator(other)
    assert not np.array_equal(first.popularity.click_counts, second.popularity.click_counts)
    batch_a, batch_b = first.next_batch(2_000), second.next_batch(2_000)
    assert not np.array_equal(batch_a.lengths, batch_b.lengths)
    assert not np.array_equal(batch_a.item_ids[:1_000], batch_b.item_ids[:1_000])


@pytest.mark.parametrize(
    ("catalog_size", "alpha_length", "alpha_clicks", "max_session_length"),
    [(1, 2.0, 2.0, 50), (7, 1.05, 1.05, 3), (3_000, 1.5, 2.5, 1), (3_000, 3.0, 1.2, 200)],
)
def test_item_ids_are_in_1_to_catalog_size_and_lengths_in_1_to_max(
    catalog_size: int, alpha_length: float, alpha_clicks: float, max_session_length: int
) -> None:
    workload = SyntheticWorkload(
        catalog_size, alpha_length, alpha_clicks, seed=3, max_session_length=max_session_length
    )
    batch = SessionGenerator(workload).next_batch(5_000)
    assert batch.item_ids.dtype == np.int64 and batch.lengths.dtype == np.int32
    assert batch.item_ids.min() >= 1 and batch.item_ids.max() <= catalog_size
    assert batch.lengths.min() >= 1 and batch.lengths.max() <= max_session_length


def test_session_ids_are_consecutive_from_one_across_batches() -> None:
    generator = SessionGenerator(WORKLOAD)
    batches = list(generator.batches(sessions_per_batch=300, total_clicks=5_000))
    assert batches[0].first_session_id == 1
    for previous, batch in itertools.pairwise(batches):
        assert batch.first_session_id == previous.first_session_id + len(previous)
    np.testing.assert_array_equal(batches[1].session_ids, np.arange(301, 601))


def test_batches_concatenate_to_the_same_stream_whatever_the_batch_size() -> None:
    reference = _concatenate(_take_sessions(SessionGenerator(WORKLOAD), 3_000, 3_000))
    for per_batch in (1, 7, 1_000):
        lengths, item_ids = _concatenate(_take_sessions(SessionGenerator(WORKLOAD), per_batch, 3_000))
        np.testing.assert_array_equal(lengths, reference[0])
        np.testing.assert_array_equal(item_ids, reference[1])


def test_total_clicks_are_exactly_the_first_clicks_of_the_endless_stream() -> None:
    endless = SessionGenerator(WORKLOAD).next_batch(4_000)
    total = 3_001
    assert endless.num_clicks > total
    batches = list(SessionGenerator(WORKLOAD).batches(sessions_per_batch=64, total_clicks=total))
    lengths, item_ids = _concatenate(batches)
    assert item_ids.size == total
    np.testing.assert_array_equal(item_ids, endless.item_ids[:total])
    # Every session but the last is whole; the last is the endless stream's session, cut short.
    np.testing.assert_array_equal(lengths[:-1], endless.lengths[: lengths.size - 1])
    assert 1 <= lengths[-1] <= endless.lengths[lengths.size - 1]


def test_zero_total_clicks_yields_no_batch_and_none_streams_on() -> None:
    assert list(SessionGenerator(WORKLOAD).batches(100, total_clicks=0)) == []
    endless = SessionGenerator(WORKLOAD).batches(100, total_clicks=None)
    assert sum(next(endless).num_clicks for _ in range(50)) > 0


def test_session_lengths_do_not_depend_on_the_catalog() -> None:
    """Experiments over catalog sizes replay the same session structure for one seed."""
    small = SessionGenerator(SyntheticWorkload(10, 2.0, 1.6, seed=5)).next_batch(1_000)
    large = SessionGenerator(SyntheticWorkload(50_000, 2.0, 3.0, seed=5)).next_batch(1_000)
    np.testing.assert_array_equal(small.lengths, large.lengths)


def test_batches_validate_their_arguments_at_once() -> None:
    generator = SessionGenerator(WORKLOAD)
    with pytest.raises(InvalidWorkloadSpec) as error:
        generator.batches(sessions_per_batch=0)
    assert error.value.field == "sessions_per_batch"
    with pytest.raises(InvalidWorkloadSpec) as error:
        generator.batches(total_clicks=-1)
    assert error.value.field == "total_clicks"
    with pytest.raises(InvalidWorkloadSpec) as error:
        generator.next_batch(WORKLOAD.max_sessions_per_batch + 1)
    assert error.value.field == "sessions_per_batch"
    assert len(generator.next_batch(0)) == 0


def test_a_popularity_table_of_another_catalog_is_refused() -> None:
    other = ItemPopularity(np.ones(10, dtype=np.int64))
    with pytest.raises(ValueError, match="popularity covers 10 items"):
        SessionGenerator(WORKLOAD, other)


def test_draws_for_alpha_near_one_are_capped_without_overflow() -> None:
    rng = np.random.Generator(np.random.PCG64(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = draw_power_law(rng, 10_000, 1.0001, 2**53)
    assert values.min() >= 1 and values.max() == 2**53


def test_sampling_inverts_the_empirical_cdf_exactly() -> None:
    """Each item covers exactly its click count of the mass axis: zeros and ties included."""
    counts = np.array([3, 0, 1, 5, 1, 0, 2, 5, 1, 9])
    popularity = ItemPopularity(counts)
    points = np.arange(counts.sum()) + 0.5
    items = popularity.items_at(points)
    np.testing.assert_array_equal(np.bincount(items, minlength=counts.size + 1)[1:], counts)
    # Left-closed steps: a step's first point belongs to it, its end to the next one.
    edges = popularity.items_at(np.arange(counts.sum(), dtype=np.float64))
    np.testing.assert_array_equal(np.bincount(edges, minlength=counts.size + 1)[1:], counts)
    np.testing.assert_array_equal(popularity.click_counts, counts)
    assert popularity.num_distinct_counts == 5


def test_whole_float_counts_are_accepted_like_integers() -> None:
    counts = np.array([2.0, 0.0, 7.0])
    assert np.array_equal(ItemPopularity(counts).click_counts, [2, 0, 7])


@pytest.mark.parametrize(
    "counts",
    [[], [0, 0], [1, -1], [1.5, 2.0], [[1, 2], [3, 4]], [1.0, math.inf], [2**53 + 2**11]],
)
def test_malformed_click_counts_are_refused(counts: list[object]) -> None:
    with pytest.raises(ValueError, match="click_counts"):
        ItemPopularity(np.array(counts))


def test_session_batch_offsets_sessions_and_truncation() -> None:
    batch = SessionBatch(5, np.array([2, 1, 3], dtype=np.int32), np.array([9, 8, 7, 6, 5, 4], dtype=np.int64))
    assert len(batch) == 3 and batch.num_clicks == 6
    np.testing.assert_array_equal(batch.offsets, [0, 2, 3, 6])
    np.testing.assert_array_equal(batch.session(2), [6, 5, 4])
    np.testing.assert_array_equal(batch.session_ids, [5, 6, 7])
    with pytest.raises(IndexError):
        batch.session(3)
    cut = batch.truncated(4)
    np.testing.assert_array_equal(cut.lengths, [2, 1, 1])
    np.testing.assert_array_equal(cut.item_ids, [9, 8, 7, 6])
    at_boundary = batch.truncated(3)
    np.testing.assert_array_equal(at_boundary.lengths, [2, 1])
    assert len(batch.truncated(0)) == 0
    assert batch.truncated(6) is batch


def test_session_batch_round_trips_through_its_proto() -> None:
    batch = SessionGenerator(WORKLOAD).next_batch(100)
    message = batch.to_proto()
    assert list(message.session_lengths) == batch.lengths.tolist()
    wire = message.SerializeToString()
    back = SessionBatch.from_proto(workload_pb2.SessionBatch.FromString(wire))
    assert back.first_session_id == 1
    np.testing.assert_array_equal(back.lengths, batch.lengths)
    np.testing.assert_array_equal(back.item_ids, batch.item_ids)


def test_a_session_batch_whose_lengths_do_not_add_up_is_refused() -> None:
    message = workload_pb2.SessionBatch(first_session_id=1, session_lengths=[2, 2], item_ids=[1])
    with pytest.raises(ValueError, match="sum to 4 but there are 1 item ids"):
        SessionBatch.from_proto(message)
    empty_session = workload_pb2.SessionBatch(session_lengths=[2, 0], item_ids=[1, 2])
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        SessionBatch.from_proto(empty_session)


def _spec(**fields: object) -> workload_pb2.WorkloadSpec:
    return workload_pb2.WorkloadSpec(
        catalog_size=1_000,
        exponents=workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=1.5),
        **fields,  # type: ignore[arg-type]
    )


def test_proto_defaults_are_applied() -> None:
    request = StreamRequest.from_proto(_spec(seed=9, total_clicks=0))
    assert request.workload == SyntheticWorkload(1_000, 2.0, 1.5, 9, DEFAULT_MAX_SESSION_LENGTH)
    assert request.sessions_per_batch == DEFAULT_SESSIONS_PER_BATCH
    assert request.total_clicks is None
    explicit = StreamRequest.from_proto(_spec(max_session_length=7, sessions_per_batch=3, total_clicks=10))
    assert (explicit.workload.max_session_length, explicit.sessions_per_batch) == (7, 3)
    assert explicit.total_clicks == 10


def test_invalid_specs_name_the_field_and_its_range(
    invalid_spec: workload_pb2.WorkloadSpec, invalid_field: str
) -> None:
    with pytest.raises(InvalidWorkloadSpec) as error:
        StreamRequest.from_proto(invalid_spec)
    assert error.value.field == invalid_field
    assert str(error.value).startswith(f"{invalid_field} must be")
    assert isinstance(error.value, ValueError)


FIELDS = {
    "catalog_size",
    "exponents.alpha_length",
    "exponents.alpha_clicks",
    "max_session_length",
    "sessions_per_batch",
    "total_clicks",
}


@settings(max_examples=300, deadline=None)
@given(
    catalog_size=st.integers(-(2**63), 2**63 - 1),
    alpha_length=st.floats(allow_nan=True, allow_infinity=True),
    alpha_clicks=st.floats(allow_nan=True, allow_infinity=True),
    total_clicks=st.integers(-(2**63), 2**63 - 1),
    seed=st.integers(0, 2**64 - 1),
    max_session_length=st.integers(-(2**31), 2**31 - 1),
    sessions_per_batch=st.integers(-(2**31), 2**31 - 1),
)
def test_any_spec_is_either_valid_or_refused_naming_a_field(
    catalog_size: int,
    alpha_length: float,
    alpha_clicks: float,
    total_clicks: int,
    seed: int,
    max_session_length: int,
    sessions_per_batch: int,
) -> None:
    spec = workload_pb2.WorkloadSpec(
        catalog_size=catalog_size,
        exponents=workload_pb2.PowerLawExponents(alpha_length=alpha_length, alpha_clicks=alpha_clicks),
        total_clicks=total_clicks,
        seed=seed,
        max_session_length=max_session_length,
        sessions_per_batch=sessions_per_batch,
    )
    try:
        request = StreamRequest.from_proto(spec)
    except InvalidWorkloadSpec as error:
        assert error.field in FIELDS
        assert str(error).startswith(error.field)
        return
    workload = request.workload
    assert 1 <= workload.catalog_size <= MAX_CATALOG_SIZE
    assert workload.alpha_length > 1 and workload.alpha_clicks > 1
    assert request.sessions_per_batch * workload.max_session_length <= MAX_CLICKS_PER_BATCH
    assert request.total_clicks is None or request.total_clicks > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    catalog_size=st.integers(1, 300),
    alpha_length=st.floats(1.01, 8.0),
    alpha_clicks=st.floats(1.01, 8.0),
    max_session_length=st.integers(1, 60),
    sessions_per_batch=st.integers(1, 40),
    total_clicks=st.integers(1, 400),
    seed=st.integers(0, 2**64 - 1),
)
def test_small_valid_workloads_stream_exact_totals_in_range(
    catalog_size: int,
    alpha_length: float,
    alpha_clicks: float,
    max_session_length: int,
    sessions_per_batch: int,
    total_clicks: int,
    seed: int,
) -> None:
    workload = SyntheticWorkload(catalog_size, alpha_length, alpha_clicks, seed, max_session_length)
    batches = list(SessionGenerator(workload).batches(sessions_per_batch, total_clicks))
    lengths, item_ids = _concatenate(batches)
    assert item_ids.size == total_clicks
    assert 1 <= item_ids.min() and item_ids.max() <= catalog_size
    assert 1 <= lengths.min() and lengths.max() <= max_session_length
    assert all(len(batch) <= sessions_per_batch for batch in batches)


def test_numpy_numbers_are_accepted_and_bools_are_not() -> None:
    numpy_numbers: tuple = (np.int64(10), np.float32(2.0), np.float64(1.5), np.uint64(3))
    workload = SyntheticWorkload(*numpy_numbers)
    assert SessionGenerator(workload).next_batch(5).item_ids.max() <= 10
    with pytest.raises(InvalidWorkloadSpec) as error:
        SyntheticWorkload(True, 2.0, 2.0)
    assert error.value.field == "catalog_size"


def test_session_partitions_share_the_popularity_but_not_the_sessions() -> None:
    base = SyntheticWorkload(5_000, alpha_length=2.2, alpha_clicks=1.8, seed=11)
    first = SessionGenerator(base)
    default_again = SessionGenerator(
        SyntheticWorkload(5_000, alpha_length=2.2, alpha_clicks=1.8, seed=11, session_partition=0)
    )
    other = SessionGenerator(
        SyntheticWorkload(5_000, alpha_length=2.2, alpha_clicks=1.8, seed=11, session_partition=1)
    )
    np.testing.assert_array_equal(first.popularity.click_counts, other.popularity.click_counts)
    batch, same, different = first.next_batch(200), default_again.next_batch(200), other.next_batch(200)
    np.testing.assert_array_equal(batch.item_ids, same.item_ids)
    assert not np.array_equal(batch.lengths, different.lengths)
