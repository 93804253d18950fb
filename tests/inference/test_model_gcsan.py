"""GC-SAN against a per-session reference (distinct items as nodes, dict-built graph, attention
written out per position), padding, odd widths with two heads, and its options.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from etude.services.inference.models import build_model
from etude.services.inference.models.base import MAX_SESSION_LENGTH
from etude.services.inference.models.gcsan import GCSAN
from etude.services.inference.models.transformer import TransformerLayer
from torch import Tensor

from inference.batches import pad_sessions
from inference.batches import random_sessions as sessions_in_range

CATALOG_SIZE = 60
random_sessions = partial(sessions_in_range, item_range=CATALOG_SIZE)

# Repeats, self-loops (a -> a), a one-item session and a long loop.
HAND_WRITTEN_SESSIONS = [
    [3, 3, 5, 3, 7, 5, 5, 2],
    [4],
    [9, 9, 9],
    [1, 2, 1, 2, 1, 2, 3],
    [5, 4, 3, 2, 1, 1, 2, 3, 4, 5] * 5,
]


def reference_node_states(model: GCSAN, session: list[int]) -> list[Tensor]:
    """The gated graph steps (no message biases) with distinct items as nodes, in float64."""
    gnn = model.gnn
    embeddings = model.item_embedding.weight.double()
    w_in, b_in = gnn.linear_edge_in.weight.double(), gnn.linear_edge_in.bias.double()
    w_out, b_out = gnn.linear_edge_out.weight.double(), gnn.linear_edge_out.bias.double()
    w_ih, b_ih = gnn.w_ih.double(), gnn.b_ih.double()
    w_hh, b_hh = gnn.w_hh.double(), gnn.b_hh.double()
    edges = {(session[i], session[i + 1]) for i in range(len(session) - 1)}
    out_degree = {u: sum(1 for a, _ in edges if a == u) for u, _ in edges}
    in_degree = {v: sum(1 for _, b in edges if b == v) for _, v in edges}
    hidden = {item: embeddings[item] for item in sorted(set(session))}
    for _ in range(model.num_steps):
        updated = {}
        for v, h in hidden.items():
            message_in = torch.zeros_like(h)
            message_out = torch.zeros_like(h)
            for u, h_u in hidden.items():
                if (u, v) in edges:
                    message_in += (w_in @ h_u + b_in) / in_degree[v]
                if (v, u) in edges:
                    message_out += (w_out @ h_u + b_out) / out_degree[v]
            g_r, g_z, g_n = (w_ih @ torch.cat([message_in, message_out]) + b_ih).chunk(3)
            h_r, h_z, h_n = (w_hh @ h + b_hh).chunk(3)
            reset = torch.sigmoid(g_r + h_r)
            update = torch.sigmoid(g_z + h_z)
            updated[v] = (1 - update) * h + update * torch.tanh(g_n + reset * h_n)
        hidden = updated
    return [hidden[item] for item in session]


def linear(layer: torch.nn.Linear, x: Tensor) -> Tensor:
    return layer.weight.double() @ x + layer.bias.double()


def layer_norm(layer: torch.nn.LayerNorm, x: Tensor) -> Tensor:
    centred = x - x.mean()
    return centred / torch.sqrt((centred**2).mean() + layer.eps) * layer.weight.double() + layer.bias.double()


def reference_gcsan(model: GCSAN, session: list[int]) -> Tensor:
    """GC-SAN for one session: causal attention over its own positions only (the padding is
    after them, so the mask never lets a position of the session see it)."""
    states = reference_node_states(model, session)
    hidden = states
    for layer in model.self_attention.layers:
        assert isinstance(layer, TransformerLayer)
        attention = layer.attention
        heads, head_size = attention.num_heads, attention.head_size
        queries = [linear(attention.query, x) for x in hidden]
        keys = [linear(attention.key, x) for x in hidden]
        values = [linear(attention.value, x) for x in hidden]
        attended = []
        for i in range(len(hidden)):
            context = []
            for head in range(heads):
                part = slice(head * head_size, (head + 1) * head_size)
                logits = torch.stack(
                    [queries[i][part] @ keys[j][part] / math.sqrt(head_size) for j in range(i + 1)]
                )
                weights = torch.softmax(logits, dim=0)
                context.append(torch.stack([weights[j] * values[j][part] for j in range(i + 1)]).sum(dim=0))
            after = layer_norm(attention.layer_norm, hidden[i] + linear(attention.dense, torch.cat(context)))
            feed = layer.feed_forward
            inner = torch.nn.functional.gelu(linear(feed.dense_1, after))
            attended.append(layer_norm(feed.layer_norm, after + linear(feed.dense_2, inner)))
        hidden = attended
    weight = model.attention_weight
    return weight * hidden[-1] + (1 - weight) * states[-1]


@pytest.mark.parametrize(
    ("dim", "options"),
    [(8, {}), (7, {"num_layers": 2, "num_heads": 2}), (6, {"num_steps": 2, "weight": 0.3})],
)
def test_matches_a_per_session_reference_on_the_distinct_items_graph(dim: int, options: dict) -> None:
    model = build_model("gcsan", CATALOG_SIZE, dim, seed=dim, **options)
    assert isinstance(model, GCSAN)
    sessions = HAND_WRITTEN_SESSIONS + random_sessions(4, seed=1) + random_sessions(4, seed=2, item_range=5)
    seq, lengths = pad_sessions(sessions)
    with torch.inference_mode():
        batched = model(seq, lengths)
    for row, session in enumerate(sessions):
        torch.testing.assert_close(
            batched[row].double(), reference_gcsan(model, session), atol=1e-6, rtol=1e-5
        )


def test_padding_and_what_follows_the_session_do_not_change_it() -> None:
    model = build_model("gcsan", CATALOG_SIZE, 8, seed=3, num_layers=2, num_heads=2)
    session = [7, 7, 12, 7, 30]
    sessions = random_sessions(9, seed=4)
    sessions[4] = session
    seq, lengths = pad_sessions(sessions)
    with torch.inference_mode():
        alone = model(*pad_sessions([session], length=len(session)))[0]
        in_batch = model(seq, lengths)[4]
        seq[4, len(session) :] = torch.randint(1, CATALOG_SIZE + 1, (MAX_SESSION_LENGTH - len(session),))
        with_garbage = model(seq, lengths)[4]
    torch.testing.assert_close(in_batch, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(with_garbage, alone, atol=1e-6, rtol=1e-5)


def test_shape_zero_padding_row_defaults_and_refused_options() -> None:
    model = build_model("gcsan", CATALOG_SIZE, 18, seed=0)
    table = model.item_embeddings()
    assert table.shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(table[0]) == 0
    assert model(*pad_sessions(random_sessions(4, seed=5))).shape == (4, 18)
    details = model.details()
    assert (details["layers"], details["heads"], details["weight"]) == ("1", "1", "0.6")
    assert isinstance(model, GCSAN)
    assert model.gnn.b_iah is None and model.gnn.b_ioh is None
    with pytest.raises(ValueError, match="weight"):
        build_model("gcsan", CATALOG_SIZE, 8, weight=1.5)
