"""CORE: the batched encoder against a per-session, per-position computation in float64; its
cosine scorer against brute force; padding; shapes.
"""

from __future__ import annotations

import math
from functools import partial
from typing import cast

import pytest
import torch
import torch.nn.functional as F
from etude.services.inference.memory import item_table_bytes
from etude.services.inference.models import MODELS, build_model
from etude.services.inference.models.core import (
    CORE,
    NORMALISE_STEP_ROWS,
    CosineScorer,
    core_scorer,
    normalised_rows,
)
from etude.services.inference.models.transformer import TransformerLayer
from torch import Tensor

from inference.batches import random_padded_batch
from inference.reference_maths import layer_norm, linear, reference_layer, sharpen

CATALOG_SIZE = 400
LENGTH = 50


padded_batch = partial(random_padded_batch, catalog_size=CATALOG_SIZE)


def sharpened_core(embedding_dim: int, seed: int) -> CORE:
    """A CORE with weights spread wider than RecBole's +-1/sqrt(d), so that the attention and
    the session weights are far from uniform.
    """
    model = build_model("core", CATALOG_SIZE, embedding_dim, seed=seed)
    assert isinstance(model, CORE)
    sharpen(model, seed + 1000)
    return model


def reference_core(model: CORE, session: list[int]) -> Tensor:
    """CORE for one unpadded session: weights from the transformer, sum of the raw embeddings."""
    embeddings = model.item_embedding.weight.double()
    positions = model.position_embedding.weight.double()
    items = [embeddings[item] for item in session]
    hidden = [layer_norm(x + positions[i], model.layer_norm) for i, x in enumerate(items)]
    for layer in model.transformer.layers:
        hidden = reference_layer(
            cast(TransformerLayer, layer), hidden, model.transformer.num_heads, model.transformer.head_size
        )
    logits = torch.stack([linear(h, model.weight_head)[0] for h in hidden])
    weights = torch.softmax(logits, dim=0)
    pooled = weights @ torch.stack(items)
    return pooled / torch.sqrt(pooled @ pooled)


def test_core_matches_a_per_position_computation_per_session() -> None:
    model = sharpened_core(11, seed=3)  # odd width: head size 6, projected back to 11
    seq, lengths = padded_batch(5, seed=1, lengths=[1, LENGTH, 2, 21, 38])
    with torch.inference_mode():
        batched = model(seq, lengths)
        for row in range(5):
            expected = reference_core(model, seq[row, : lengths[row]].tolist())
            torch.testing.assert_close(batched[row].double(), expected, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_a_session() -> None:
    model = sharpened_core(10, seed=5)
    session = torch.tensor([[7, 19, 3, 250, 7]])
    seq, lengths = padded_batch(9, seed=6)
    seq[4] = 0
    seq[4, :5] = session
    lengths[4] = 5
    with torch.inference_mode():
        alone = model(session, torch.tensor([5]))[0]  # L = 5: no padding at all
        in_batch = model(seq, lengths)[4]
    torch.testing.assert_close(in_batch, alone, atol=1e-6, rtol=1e-5)


def brute_force_top_k(model: CORE, session_repr: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """What the reference does per request: normalise the table, cosine / temperature, top-k."""
    table = F.normalize(model.item_embedding.weight.detach().double(), dim=-1)
    scores = session_repr.double() @ table.T / model.temperature
    scores[:, 0] = -math.inf
    return torch.topk(scores, k, dim=1)


@pytest.mark.parametrize("max_score_elements", [1 << 25, 1000])  # one product, and chunked
def test_core_scorer_equals_brute_force_cosine_over_temperature(max_score_elements: int) -> None:
    model = build_model("core", CATALOG_SIZE, 16, seed=7)
    assert isinstance(model, CORE)
    scorer = MODELS["core"].make_scorer(
        model, compute_dtype=torch.float32, max_score_elements=max_score_elements
    )
    assert isinstance(scorer, CosineScorer)
    seq, lengths = padded_batch(6, seed=8)
    with torch.inference_mode():
        session_repr = model(seq, lengths)
        torch.testing.assert_close(session_repr.norm(dim=1), torch.ones(6))
        for k in (1, 21, CATALOG_SIZE):
            scores, ids = scorer.top_k(session_repr, k, seq)
            expected_scores, expected_ids = brute_force_top_k(model, session_repr, k)
            assert scores.dtype == torch.float32
            assert torch.equal(ids, expected_ids)
            torch.testing.assert_close(scores.double(), expected_scores, atol=1e-5, rtol=1e-5)
    assert (ids != 0).all()


def test_core_scorer_normalises_the_table_once_and_refuses_other_encoders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build_model("core", CATALOG_SIZE, 8, seed=9)
    scorer = core_scorer(model)
    session = F.normalize(torch.randn(2, 8), dim=-1)
    expected = scorer.top_k(session, 5)

    def no_normalisation_per_request(*args: object, **kwargs: object) -> Tensor:
        raise AssertionError("the table must be normalised at load, not per request")

    monkeypatch.setattr(F, "normalize", no_normalisation_per_request)
    scores, ids = scorer.top_k(session, 5)
    assert torch.equal(ids, expected[1])
    assert torch.equal(scores, expected[0])
    with pytest.raises(TypeError, match="CORE encoder"):
        core_scorer(build_model("gru4rec", CATALOG_SIZE, 8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_table_normalised_step_by_step_equals_the_whole_table_normalised_then_cast(
    dtype: torch.dtype,
) -> None:
    table = torch.randn(3 * NORMALISE_STEP_ROWS + 5, 24, generator=torch.Generator().manual_seed(2))
    table[0].zero_()
    normalised = normalised_rows(table, dtype)
    assert normalised.dtype == dtype
    assert torch.equal(normalised, F.normalize(table, dim=-1).to(dtype))


@pytest.mark.parametrize(("dtype", "scoring_bytes"), [(torch.float32, 4), (torch.bfloat16, 2)])
def test_the_normalised_table_counts_among_the_servers_item_table_bytes(
    dtype: torch.dtype, scoring_bytes: int
) -> None:
    model = build_model("core", CATALOG_SIZE, 8, seed=9)
    scorer = core_scorer(model, compute_dtype=dtype)
    rows = CATALOG_SIZE + 1
    assert item_table_bytes([model, scorer], rows) == rows * 8 * (4 + scoring_bytes)


def test_core_shapes_padding_row_and_details() -> None:
    model = build_model("core", CATALOG_SIZE, 18, seed=0)
    table = model.item_embeddings()
    assert table.shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(table[0]) == 0
    with torch.inference_mode():
        output = model(*padded_batch(4, seed=0))
    assert output.shape == (4, 18)
    assert output.dtype == torch.float32
    details = model.details()
    assert details["temperature"] == "0.07"
    assert details["layers"] == "2"
    assert details["heads"] == "2"
