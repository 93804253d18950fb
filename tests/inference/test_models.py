"""Encoders: GRU4Rec's maths against a hand-written GRU, padding, runtimes, registry, policies."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from etude.services.inference.models import MODEL_NAMES, MODELS, build_model
from etude.services.inference.models.base import (
    fourth_root_dim,
    resolve_embedding_dim,
)
from etude.services.inference.models.gru4rec import GRU4Rec
from etude.services.inference.runtime import prepare_encoder

from inference.batches import random_padded_batch

CATALOG_SIZE = 500


padded_batch = partial(random_padded_batch, catalog_size=CATALOG_SIZE)


def reference_gru4rec(model: GRU4Rec, session: list[int]) -> torch.Tensor:
    """GRU4Rec for one session, the GRU equations written out step by step in float64."""
    embeddings = model.item_embedding.weight.double()
    # weight_ih_l0 [3H, d] and weight_hh_l0 [3H, H], gates in the order r, z, n.
    w_ih, w_hh = (weight.double() for weight in model.gru.all_weights[0])
    w_ir, w_iz, w_in = w_ih.chunk(3)
    w_hr, w_hz, w_hn = w_hh.chunk(3)
    hidden = torch.zeros(model.hidden_size, dtype=torch.float64)
    for item in session:
        x = embeddings[item]
        reset = torch.sigmoid(w_ir @ x + w_hr @ hidden)
        update = torch.sigmoid(w_iz @ x + w_hz @ hidden)
        candidate = torch.tanh(w_in @ x + reset * (w_hn @ hidden))
        hidden = (1 - update) * candidate + update * hidden
    return model.dense.weight.double() @ hidden + model.dense.bias.double()


def test_gru4rec_matches_a_step_by_step_gru_per_session() -> None:
    model = build_model("gru4rec", CATALOG_SIZE, 10, seed=3)
    assert isinstance(model, GRU4Rec)
    seq, lengths = padded_batch(6, seed=1)
    with torch.inference_mode():
        batched = model(seq, lengths)
    for row in range(6):
        session = seq[row, : lengths[row]].tolist()
        torch.testing.assert_close(
            batched[row].double(), reference_gru4rec(model, session), atol=1e-5, rtol=1e-4
        )


def test_gru4rec_shape_and_zero_padding_row() -> None:
    model = build_model("gru4rec", CATALOG_SIZE, 18, seed=0)
    table = model.item_embeddings()
    assert table.shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(table[0]) == 0
    assert model(*padded_batch(4, seed=0)).shape == (4, 18)


def test_padding_does_not_change_a_sessions_representation() -> None:
    model = build_model("gru4rec", CATALOG_SIZE, 10, seed=2)
    session = torch.tensor([[5, 17, 42]])
    seq, lengths = padded_batch(9, seed=4)
    seq[4] = 0
    seq[4, :3] = session
    lengths[4] = 3
    with torch.inference_mode():
        unpadded = model(session, torch.tensor([3]))  # L = 3: no padding at all
        in_batch = model(seq, lengths)[4]
    torch.testing.assert_close(in_batch, unpadded[0], atol=1e-6, rtol=1e-5)


def test_same_seed_gives_identical_weights_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = build_model("gru4rec", CATALOG_SIZE, 10, seed=7)
    second = build_model("gru4rec", CATALOG_SIZE, 10, seed=7)
    assert torch.rand(1) == before
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    other = build_model("gru4rec", CATALOG_SIZE, 10, seed=8)
    assert not torch.equal(first.item_embeddings(), other.item_embeddings())


def test_noop_returns_zeros_and_a_catalog_without_memory() -> None:
    model = build_model("noop", 10_000_000, 57)
    assert torch.count_nonzero(model(*padded_batch(3, seed=0))) == 0
    table = model.item_embeddings()
    assert table.shape == (10_000_001, 57)
    assert table.stride() == (0, 1)  # a broadcast view, not 2.3 GB


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("runtime", ["jit", "compile"])
def test_compiled_encoder_matches_eager_on_unseen_batch_sizes_and_lengths(name: str, runtime: str) -> None:
    if runtime == "compile" and name == "noop":
        pytest.skip("inductor's first C++ build takes ~20 s here; noop has nothing to compile")
    eager = build_model(name, CATALOG_SIZE, 10, seed=5)
    compiled = prepare_encoder(build_model(name, CATALOG_SIZE, 10, seed=5), runtime)
    with torch.inference_mode():
        # Warm-up (jit specialises on its first calls): short sessions, batch sizes 2 and 3.
        for batch_size in (2, 3, 2, 3):
            compiled(*padded_batch(batch_size, seed=batch_size, max_length=8))
        for batch_size, seed in ((1, 11), (17, 12), (64, 13)):
            seq, lengths = padded_batch(batch_size, seed=seed)
            torch.testing.assert_close(compiled(seq, lengths), eager(seq, lengths))


def test_unknown_model_and_runtime_are_refused() -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("word2vec", 10, 4)
    with pytest.raises(ValueError, match="runtime must be one of"):
        prepare_encoder(build_model("noop", 10, 4), "onnx")


def test_registry_lists_noop_and_gru4rec_with_summaries() -> None:
    assert set(MODEL_NAMES) >= {"noop", "gru4rec"}
    assert all(entry.summary for entry in MODELS.values())


@pytest.mark.parametrize(
    ("catalog_size", "fourth_root", "pow2"),
    [
        (10_000, 10, 16),
        (100_000, 18, 32),
        (1_000_000, 32, 32),
        (5_000_000, 48, 64),
        (10_000_000, 57, 64),
        (20_000_000, 67, 128),
        (1, 1, 1),
        (16, 2, 2),
        (17, 3, 4),
    ],
)
def test_embedding_policies_follow_the_integer_fourth_root(
    catalog_size: int, fourth_root: int, pow2: int
) -> None:
    assert fourth_root_dim(catalog_size) == fourth_root
    assert resolve_embedding_dim(catalog_size, 0, "fourth_root") == fourth_root
    assert resolve_embedding_dim(catalog_size, 0, "fourth_root_pow2") == pow2
    assert resolve_embedding_dim(catalog_size, 24, "fourth_root") == 24


def test_fourth_root_is_exact_around_perfect_fourth_powers() -> None:
    for dim in (3, 57, 1000, 31_622):
        assert fourth_root_dim(dim**4) == dim
        assert fourth_root_dim(dim**4 + 1) == dim + 1
        assert fourth_root_dim(dim**4 - 1) == dim
