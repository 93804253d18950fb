"""LightSANs: the batched encoder against a per-session, per-position computation in float64;
the precomputed position attention (recomputed with the weights, kept by jit freeze); padding
attended as in the reference; shapes.
"""

from __future__ import annotations

import math
from functools import partial
from typing import cast

import torch
from etude.services.inference.models import build_model
from etude.services.inference.models.lightsans import LightLayer, LightSANs
from etude.services.inference.runtime import prepare_encoder
from torch import Tensor

from inference.batches import random_padded_batch
from inference.reference_maths import layer_norm, linear, sharpen

CATALOG_SIZE = 300
LENGTH = 50


padded_batch = partial(random_padded_batch, catalog_size=CATALOG_SIZE)


def sharpened_lightsans(embedding_dim: int, seed: int, **options: object) -> LightSANs:
    model = build_model("lightsans", CATALOG_SIZE, embedding_dim, seed=seed, **options)
    assert isinstance(model, LightSANs)
    sharpen(model, seed + 1000)
    model.refresh()
    return model


def aggregate(rows: list[Tensor], theta: Tensor) -> list[Tensor]:
    """Item-to-interest aggregation: per interest c, softmax over positions of row . theta_c."""
    stacked = torch.stack(rows)  # [L, h*dh]
    interests = []
    for c in range(theta.size(1)):
        weights = torch.softmax(torch.stack([row @ theta[:, c].double() for row in rows]), dim=0)
        interests.append(weights @ stacked)
    return interests


def reference_layer(layer: LightLayer, inputs: list[Tensor], positions: Tensor) -> list[Tensor]:
    attention = layer.attention
    heads, head_size = attention.num_heads, attention.head_size
    length = len(inputs)
    queries = [linear(x, attention.query) for x in inputs]
    keys = [linear(x, attention.key) for x in inputs]
    values = [linear(x, attention.value) for x in inputs]
    key_interests = aggregate(keys, attention.key_interests)
    value_interests = aggregate(values, attention.value_interests)
    # Decoupled positions, from the parameters (not from the module's precomputed buffer).
    normalised = [layer_norm(positions[i], attention.position_layer_norm) for i in range(length)]
    position_queries = [linear(p, attention.position_query) / math.sqrt(2 * head_size) for p in normalised]
    position_keys = [linear(p, attention.position_key) for p in normalised]
    contexts: list[list[Tensor]] = [[] for _ in range(length)]
    for head in range(heads):
        part = slice(head * head_size, (head + 1) * head_size)
        # Both softmaxes run over the query positions i (dim -2 in the reference).
        item_logits = torch.stack(
            [torch.stack([q[part] @ k[part] for k in key_interests]) for q in queries]
        ) / math.sqrt(head_size)  # [L, kappa]
        item_weights = torch.softmax(item_logits, dim=0)
        position_logits = torch.stack(
            [torch.stack([pq[part] @ pk[part] for pk in position_keys]) for pq in position_queries]
        ) / math.sqrt(head_size)  # [L, L]
        position_weights = torch.softmax(position_logits, dim=0)
        interest_values = torch.stack([v[part] for v in value_interests])  # [kappa, dh]
        position_values = torch.stack([v[part] for v in values])  # [L, dh]
        for i in range(length):
            item_context = item_weights[i] @ interest_values
            position_context = position_weights[i] @ position_values
            contexts[i].append(item_context + position_context)
    outputs = []
    for i, x in enumerate(inputs):
        attended = layer_norm(x + linear(torch.cat(contexts[i]), attention.dense), attention.layer_norm)
        feed = layer.feed_forward
        inner = linear(attended, feed.dense_1)
        gelu = inner * 0.5 * (1.0 + torch.erf(inner / math.sqrt(2.0)))
        outputs.append(layer_norm(attended + linear(gelu, feed.dense_2), feed.layer_norm))
    return outputs


def reference_lightsans(model: LightSANs, padded_row: list[int], length: int) -> Tensor:
    """LightSANs for one session as the reference runs it: every position of the padded row
    (padding included, no masks), LN(E[s_i]) without positions, the output at length - 1.
    """
    embeddings = model.item_embedding.weight.double()
    positions = model.position_embedding.weight.double()
    hidden = [layer_norm(embeddings[item], model.layer_norm) for item in padded_row]
    for layer in model.layers:
        hidden = reference_layer(cast(LightLayer, layer), hidden, positions)
    return hidden[length - 1]


def assert_matches_reference(model: LightSANs, seq: Tensor, lengths: Tensor) -> None:
    with torch.inference_mode():
        batched = model(seq, lengths)
        for row in range(seq.size(0)):
            expected = reference_lightsans(model, seq[row].tolist(), int(lengths[row]))
            torch.testing.assert_close(batched[row].double(), expected, atol=1e-5, rtol=1e-5)


def test_lightsans_matches_a_per_position_computation_per_session() -> None:
    # d = 11 with 2 heads: head size 6, projections 11 -> 12 and back; 4 interests.
    model = sharpened_lightsans(11, seed=3, k_interests=4)
    assert_matches_reference(model, *padded_batch(3, seed=1, lengths=[1, LENGTH, 13]))


def test_sessions_narrower_than_the_position_table_use_the_logits_corner() -> None:
    model = sharpened_lightsans(8, seed=4)
    assert_matches_reference(model, *padded_batch(2, seed=2, lengths=[20, 5], width=20))


def test_position_attention_follows_the_weights_and_survives_jit_freeze() -> None:
    model = build_model("lightsans", CATALOG_SIZE, 10, seed=5)
    assert isinstance(model, LightSANs)
    seq, lengths = padded_batch(4, seed=3)
    sharpen(model, seed=6)
    with torch.inference_mode():
        stale = model(seq, lengths)
        model.refresh()
        fresh = model(seq, lengths)
    assert not torch.allclose(stale, fresh)
    assert_matches_reference(model, seq[:1], lengths[:1])
    frozen = prepare_encoder(model, "jit")
    with torch.inference_mode():
        for _ in range(3):  # jit specialises on its first calls
            torch.testing.assert_close(frozen(seq, lengths), fresh)


def test_loading_weights_recomputes_the_position_attention() -> None:
    source = sharpened_lightsans(10, seed=7)
    target = build_model("lightsans", CATALOG_SIZE, 10, seed=8)
    state = source.state_dict()
    assert not any("position_attention" in key or "position_logits" in key for key in state)
    target.load_state_dict(state)
    seq, lengths = padded_batch(5, seed=4)
    with torch.inference_mode():
        torch.testing.assert_close(target(seq, lengths), source(seq, lengths))


def test_a_session_is_independent_of_its_batch_but_attends_its_own_padding() -> None:
    model = sharpened_lightsans(10, seed=9)
    seq, lengths = padded_batch(7, seed=5)
    lengths[2] = 6
    seq[2, 6:] = 0
    with torch.inference_mode():
        in_batch = model(seq, lengths)[2]
        alone = model(seq[2:3], lengths[2:3])[0]
        unpadded = model(seq[2:3, :6], lengths[2:3])[0]
        seq[2, 6:] = torch.randint(1, CATALOG_SIZE + 1, (LENGTH - 6,))
        with_garbage = model(seq, lengths)[2]
    torch.testing.assert_close(in_batch, alone, atol=1e-6, rtol=1e-5)
    # No masks, faithful to the reference: the padding is attended, so it matters.
    assert not torch.allclose(unpadded, alone, atol=1e-4)
    assert not torch.allclose(with_garbage, alone, atol=1e-4)


def test_lightsans_shapes_padding_row_and_details() -> None:
    model = build_model("lightsans", CATALOG_SIZE, 18, seed=0)
    table = model.item_embeddings()
    assert table.shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(table[0]) == 0
    with torch.inference_mode():
        output = model(*padded_batch(4, seed=0))
    assert output.shape == (4, 18)
    assert output.dtype == torch.float32
    details = model.details()
    assert details["k_interests"] == "15"
    assert details["layers"] == "2"
    assert details["heads"] == "2"
    assert build_model("lightsans", CATALOG_SIZE, 18, k_interests=5).details()["k_interests"] == "5"
