"""SASRec: the batched encoder against a per-session, per-position transformer written out in
float64; padding; the last-layer saving against the full transformer; shapes.
"""

from __future__ import annotations

from functools import partial
from typing import cast

import torch
from etude.services.inference.models import build_model
from etude.services.inference.models.sasrec import SASRec
from etude.services.inference.models.transformer import TransformerLayer
from torch import Tensor

from inference.batches import random_padded_batch
from inference.reference_maths import layer_norm, reference_layer, sharpen

CATALOG_SIZE = 300
LENGTH = 50


padded_batch = partial(random_padded_batch, catalog_size=CATALOG_SIZE)


def sharpened_sasrec(embedding_dim: int, seed: int, **options: object) -> SASRec:
    """A SASRec whose weights are spread wider than RecBole's N(0, 0.02), so that attention is
    far from uniform and a wrong mask or head split shows up in the comparison.
    """
    model = build_model("sasrec", CATALOG_SIZE, embedding_dim, seed=seed, **options)
    assert isinstance(model, SASRec)
    sharpen(model, seed + 1000)
    return model


def reference_sasrec(model: SASRec, session: list[int]) -> Tensor:
    """SASRec for one unpadded session: LN(E[s_i] + P[i]), the blocks, the last position."""
    embeddings = model.item_embedding.weight.double()
    positions = model.position_embedding.weight.double()
    hidden = [layer_norm(embeddings[item] + positions[i], model.layer_norm) for i, item in enumerate(session)]
    heads = model.final_layer.attention.num_heads
    head_size = model.final_layer.attention.head_size
    layers = [cast(TransformerLayer, layer) for layer in model.transformer.layers] + [model.final_layer]
    for layer in layers:
        hidden = reference_layer(layer, hidden, heads, head_size)
    return hidden[-1]


def test_sasrec_matches_a_per_position_transformer_per_session() -> None:
    # d = 11 with 2 heads: head size 6, Q/K/V project 11 -> 12 and back.
    for last_layer_query_only in (True, False):
        model = sharpened_sasrec(11, seed=3, last_layer_query_only=last_layer_query_only)
        seq, lengths = padded_batch(5, seed=1, lengths=[1, LENGTH, 2, 17, 33])
        with torch.inference_mode():
            batched = model(seq, lengths)
            for row in range(5):
                expected = reference_sasrec(model, seq[row, : lengths[row]].tolist())
                torch.testing.assert_close(batched[row].double(), expected, atol=1e-5, rtol=1e-5)


def test_last_layer_query_only_equals_the_full_transformers_last_position() -> None:
    full = build_model("sasrec", CATALOG_SIZE, 16, seed=4, last_layer_query_only=False)
    saving = build_model("sasrec", CATALOG_SIZE, 16, seed=4)
    seq, lengths = padded_batch(33, seed=2)
    with torch.inference_mode():
        torch.testing.assert_close(saving(seq, lengths), full(seq, lengths), atol=1e-6, rtol=1e-5)


def test_padding_and_what_follows_len_do_not_change_a_session() -> None:
    model = sharpened_sasrec(10, seed=5)
    session = torch.tensor([[7, 19, 3, 250]])
    seq, lengths = padded_batch(9, seed=6)
    seq[4] = 0
    seq[4, :4] = session
    lengths[4] = 4
    with torch.inference_mode():
        alone = model(session, torch.tensor([4]))[0]  # L = 4: no padding at all
        in_batch = model(seq, lengths)[4]
        seq[4, 4:] = torch.randint(1, CATALOG_SIZE + 1, (LENGTH - 4,))  # garbage after len
        with_garbage = model(seq, lengths)[4]
    torch.testing.assert_close(in_batch, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(with_garbage, alone, atol=1e-6, rtol=1e-5)


def test_sasrec_shapes_padding_row_and_details() -> None:
    model = build_model("sasrec", CATALOG_SIZE, 18, seed=0)
    table = model.item_embeddings()
    assert table.shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(table[0]) == 0
    with torch.inference_mode():
        output = model(*padded_batch(4, seed=0))
    assert output.shape == (4, 18)
    assert output.dtype == torch.float32
    details = model.details()
    assert details["layers"] == "2"
    assert details["heads"] == "2"
    assert details["inner_size"] == "256"
    assert details["positions"] == str(LENGTH)
