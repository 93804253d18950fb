"""The recommender core: request validation, batching into one tensor, mixed k, truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from etude.services.inference.models.base import MAX_SESSION_LENGTH
from etude.services.inference.recommender import (
    InvalidK,
    InvalidRequest,
    InvalidSession,
    Recommender,
    RecommenderConfig,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CATALOG_SIZE = 40
MAX_REQUEST_ITEMS = 60


@pytest.fixture(scope="module")
def recommender() -> Recommender:
    return Recommender(
        RecommenderConfig(
            "gru4rec",
            CATALOG_SIZE,
            embedding_dim=8,
            max_request_items=MAX_REQUEST_ITEMS,
            default_k=21,
            seed=1,
        )
    )


def answer(recommender: Recommender, item_ids: list[int], k: int = 0) -> tuple[list[int], ...]:
    result = recommender.recommend_batch([recommender.validate(item_ids, k)])[0]
    return result.item_ids, result.scores  # type: ignore[return-value]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    item_ids=st.lists(
        st.one_of(
            st.integers(1, CATALOG_SIZE),
            st.integers(-(2**70), 2**70),  # beyond int64 too: must be refused, not crash
        ),
        max_size=MAX_REQUEST_ITEMS + 5,
    ),
    k=st.one_of(st.integers(-3, CATALOG_SIZE + 3), st.integers(-(2**31), 2**31 - 1)),
)
def test_every_invalid_request_is_rejected_naming_its_field_and_every_valid_one_answered(
    recommender: Recommender, item_ids: list[int], k: int
) -> None:
    ids_ok = 0 < len(item_ids) <= MAX_REQUEST_ITEMS and all(1 <= i <= CATALOG_SIZE for i in item_ids)
    k_ok = 0 <= k <= CATALOG_SIZE
    if ids_ok and k_ok:
        ids, scores = answer(recommender, item_ids, k)
        assert len(ids) == len(scores) == (k or 21)
        assert all(1 <= i <= CATALOG_SIZE for i in ids)
        assert len(set(ids)) == len(ids)
        assert scores == sorted(scores, reverse=True)
    else:
        with pytest.raises(InvalidRequest) as raised:
            recommender.validate(item_ids, k)
        # Checked in this order: session size, then k, then each id.
        size_ok = 0 < len(item_ids) <= MAX_REQUEST_ITEMS
        expected_field = "item_ids" if not size_ok or k_ok else "k"
        assert raised.value.field == expected_field
        assert expected_field in str(raised.value)


@pytest.mark.parametrize(
    ("item_ids", "k", "error", "message"),
    [
        ([], 5, InvalidSession, "item_ids must not be empty"),
        ([1, 2, 0], 5, InvalidSession, r"item_ids\[2\] = 0 is outside 1\.\.40"),
        ([41], 5, InvalidSession, r"item_ids\[0\] = 41 is outside 1\.\.40"),
        ([3, -7], 5, InvalidSession, r"item_ids\[1\] = -7"),
        ([1] * (MAX_REQUEST_ITEMS + 1), 5, InvalidSession, "max_request_items = 60"),
        ([1], -1, InvalidK, r"k = -1 is outside 1\.\.40"),
        ([1], 41, InvalidK, r"k = 41 is outside 1\.\.40"),
    ],
)
def test_each_bad_input_names_the_field_the_value_and_the_allowed_range(
    recommender: Recommender, item_ids: list[int], k: int, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        recommender.validate(item_ids, k)


def test_k_zero_means_the_default(recommender: Recommender) -> None:
    assert len(answer(recommender, [1, 2, 3], 0)[0]) == 21


def test_a_tiny_catalog_shrinks_the_default_k_instead_of_failing() -> None:
    tiny = Recommender(RecommenderConfig("noop", 5, warmup=False))
    assert tiny.default_k == 5
    assert answer(tiny, [1], 0)[0] == [1, 2, 3, 4, 5]


def test_noop_answers_what_its_head_gives_without_running_the_model() -> None:
    noop = Recommender(RecommenderConfig("noop", 100, warmup=False))
    queries = [noop.validate([5, 6], 3), noop.validate([7], 21)]
    answers = noop.recommend_batch(queries)
    with torch.inference_mode():
        seq = torch.zeros(2, MAX_SESSION_LENGTH, dtype=torch.int64)
        scores, ids = noop.scorer.top_k(noop.served_encoder(seq, torch.tensor([2, 1])), 21, seq)
    assert [a.item_ids for a in answers] == [ids[0, :3].tolist(), ids[1].tolist()]
    assert [a.scores for a in answers] == [scores[0, :3].tolist(), scores[1].tolist()]


def test_only_the_most_recent_fifty_clicks_are_used(recommender: Recommender) -> None:
    rng = np.random.default_rng(0)
    recent = rng.integers(1, CATALOG_SIZE + 1, size=MAX_SESSION_LENGTH).tolist()
    older = rng.integers(1, CATALOG_SIZE + 1, size=9).tolist()
    assert answer(recommender, older + recent, 10) == answer(recommender, recent, 10)


def test_a_batch_with_mixed_k_and_lengths_equals_each_request_alone(
    recommender: Recommender,
) -> None:
    rng = np.random.default_rng(1)
    requests = [
        (rng.integers(1, CATALOG_SIZE + 1, size=length).tolist(), k)
        for length, k in ((1, 3), (50, 21), (7, 40), (55, 1), (2, 0))
    ]
    batch = recommender.recommend_batch([recommender.validate(ids, k) for ids, k in requests])
    for (ids, k), result in zip(requests, batch, strict=True):
        alone_ids, alone_scores = answer(recommender, ids, k)
        assert result.item_ids == alone_ids
        np.testing.assert_allclose(result.scores, alone_scores, rtol=1e-5, atol=1e-7)


def test_jit_runtime_answers_like_eager() -> None:
    configs = [
        RecommenderConfig("gru4rec", 300, embedding_dim=8, seed=4, runtime=runtime)
        for runtime in ("eager", "jit")
    ]
    eager, jit = (Recommender(config) for config in configs)
    rng = np.random.default_rng(2)
    sessions = [rng.integers(1, 301, size=n).tolist() for n in (3, 50, 11, 1, 29)]
    # Five sessions at once: a batch size the warm-up did not use.
    queries = [eager.validate(s, 21) for s in sessions]
    for a, b in zip(eager.recommend_batch(queries), jit.recommend_batch(queries), strict=True):
        assert a.item_ids == b.item_ids
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "bert4rec"}, "model must be one of"),
        ({"catalog_size": 0}, "catalog_size must be >= 1"),
        ({"runtime": "onnx"}, "runtime must be one of"),
        ({"precision": "fp16"}, "fp16 needs a cuda device"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"embedding_policy": "sqrt"}, "embedding_policy must be one of"),
        ({"max_request_items": 0}, "max_request_items must be >= 1"),
        ({"default_k": 0}, "default_k must be >= 1"),
    ],
)
def test_bad_configuration_is_refused_at_start_up(changes: dict[str, object], message: str) -> None:
    settings_ = {"model": "noop", "catalog_size": 10, **changes}
    with pytest.raises(ValueError, match=message):
        RecommenderConfig(**settings_)  # type: ignore[arg-type]


def test_details_report_the_models_choices(recommender: Recommender) -> None:
    details = recommender.details()
    assert details["hidden_size"] == "128"
    assert details["precision"] == "fp32"
    assert details["embedding_policy"] == "explicit"
    assert recommender.embedding_dim == 8
