"""SR-GNN: the batched positions-as-nodes graph against the reference's distinct-items graph built
per session with dicts, the model against a per-session reference on that graph, and padding.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from etude.services.inference.models import build_model
from etude.services.inference.models.base import MAX_SESSION_LENGTH
from etude.services.inference.models.session_graph import session_graph
from etude.services.inference.models.srgnn import SRGNN
from torch import Tensor

from inference.batches import pad_sessions
from inference.batches import random_sessions as sessions_in_range

CATALOG_SIZE = 60
random_sessions = partial(sessions_in_range, item_range=CATALOG_SIZE)

# Repeats, self-loops (a -> a), a repeated edge, a one-item session and a long loop.
HAND_WRITTEN_SESSIONS = [
    [3, 3, 5, 3, 7, 5, 5, 2],
    [4],
    [9, 9, 9],
    [1, 2, 1, 2, 1, 2, 3],
    [6, 8],
    [5, 4, 3, 2, 1, 1, 2, 3, 4, 5] * 5,
]


def reference_graph(session: list[int]) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    """RecBole's graph with distinct items as nodes: (A_in[(v, u)], A_out[(u, v)]) by item."""
    edges = {(session[i], session[i + 1]) for i in range(len(session) - 1)}
    out_degree = {u: sum(1 for a, _ in edges if a == u) for u, _ in edges}
    in_degree = {v: sum(1 for _, b in edges if b == v) for _, v in edges}
    adjacency_out = {(u, v): 1.0 / out_degree[u] for u, v in edges}
    adjacency_in = {(v, u): 1.0 / in_degree[v] for u, v in edges}
    return adjacency_in, adjacency_out


def reference_srgnn(model: SRGNN, session: list[int]) -> Tensor:
    """SR-GNN for one session in float64 with items as nodes, every sum written out."""
    gnn = model.gnn
    embeddings = model.item_embedding.weight.double()
    w_in, b_in = gnn.linear_edge_in.weight.double(), gnn.linear_edge_in.bias.double()
    w_out, b_out = gnn.linear_edge_out.weight.double(), gnn.linear_edge_out.bias.double()
    assert gnn.b_iah is not None and gnn.b_ioh is not None
    b_iah, b_ioh = gnn.b_iah.double(), gnn.b_ioh.double()
    w_ih, b_ih = gnn.w_ih.double(), gnn.b_ih.double()
    w_hh, b_hh = gnn.w_hh.double(), gnn.b_hh.double()
    adjacency_in, adjacency_out = reference_graph(session)
    hidden = {item: embeddings[item] for item in sorted(set(session))}
    for _ in range(model.num_steps):
        updated = {}
        for v, h in hidden.items():
            message_in = b_iah.clone()
            message_out = b_ioh.clone()
            for u, h_u in hidden.items():
                message_in += adjacency_in.get((v, u), 0.0) * (w_in @ h_u + b_in)
                message_out += adjacency_out.get((v, u), 0.0) * (w_out @ h_u + b_out)
            g_r, g_z, g_n = (w_ih @ torch.cat([message_in, message_out]) + b_ih).chunk(3)
            h_r, h_z, h_n = (w_hh @ h + b_hh).chunk(3)
            reset = torch.sigmoid(g_r + h_r)
            update = torch.sigmoid(g_z + h_z)
            new = torch.tanh(g_n + reset * h_n)
            updated[v] = (1 - update) * h + update * new
        hidden = updated
    states = [hidden[item] for item in session]
    last = states[-1]
    one = model.linear_one.weight.double() @ last + model.linear_one.bias.double()
    q = model.linear_three.weight.double()[0]
    attended = torch.zeros_like(last)
    for state in states:
        two = model.linear_two.weight.double() @ state + model.linear_two.bias.double()
        attended += (q @ torch.sigmoid(one + two)) * state
    transform = model.linear_transform
    return transform.weight.double() @ torch.cat([attended, last]) + transform.bias.double()


def test_batched_graph_matches_a_per_session_dict_graph_with_repeats_and_loops() -> None:
    sessions = HAND_WRITTEN_SESSIONS + random_sessions(10, seed=0, item_range=6)
    seq, lengths = pad_sessions(sessions)
    alias, adjacency_in, adjacency_out = session_graph(seq, lengths)
    for row, session in enumerate(sessions):
        first = {item: session.index(item) for item in session}
        assert alias[row, : len(session)].tolist() == [first[item] for item in session]
        reference_in, reference_out = reference_graph(session)
        expected_in = torch.zeros(MAX_SESSION_LENGTH, MAX_SESSION_LENGTH)
        expected_out = torch.zeros(MAX_SESSION_LENGTH, MAX_SESSION_LENGTH)
        for (v, u), value in reference_in.items():
            expected_in[first[v], first[u]] = value
        for (u, v), value in reference_out.items():
            expected_out[first[u], first[v]] = value
        # Later occurrences and the padding are isolated nodes.
        torch.testing.assert_close(adjacency_in[row], expected_in, rtol=0, atol=1e-7)
        torch.testing.assert_close(adjacency_out[row], expected_out, rtol=0, atol=1e-7)


def test_graph_edges_stop_at_the_session_length() -> None:
    seq, lengths = pad_sessions([[2, 3, 4]])
    seq[0, 3:6] = torch.tensor([4, 2, 7])  # garbage after len
    _, adjacency_in, adjacency_out = session_graph(seq, lengths)
    _, clean_in, clean_out = session_graph(*pad_sessions([[2, 3, 4]]))
    assert torch.equal(adjacency_in, clean_in)
    assert torch.equal(adjacency_out, clean_out)


def test_positions_as_nodes_give_the_distinct_items_representation() -> None:
    for num_steps in (1, 2):
        # In float64 on both sides: in float32 the kernels' rounding varied from run to run by up
        # to 2.5e-5 (a flaky test). What remains is the float32 graph's 1/deg (about 1e-8).
        model = build_model("srgnn", CATALOG_SIZE, 9, seed=num_steps, num_steps=num_steps).double()
        assert isinstance(model, SRGNN)
        sessions = (
            HAND_WRITTEN_SESSIONS + random_sessions(6, seed=1) + random_sessions(6, seed=2, item_range=5)
        )
        seq, lengths = pad_sessions(sessions)
        with torch.inference_mode():
            batched = model(seq, lengths)
        for row, session in enumerate(sessions):
            torch.testing.assert_close(batched[row], reference_srgnn(model, session), atol=1e-8, rtol=1e-6)


def test_padding_and_what_follows_the_session_do_not_change_it() -> None:
    model = build_model("srgnn", CATALOG_SIZE, 8, seed=3)
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


def test_shape_zero_padding_row_and_refused_options() -> None:
    model = build_model("srgnn", CATALOG_SIZE, 18, seed=0)
    table = model.item_embeddings()
    assert table.shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(table[0]) == 0
    assert model(*pad_sessions(random_sessions(4, seed=5))).shape == (4, 18)
    assert model.details()["gnn_steps"] == "1"
    with pytest.raises(ValueError, match="num_steps"):
        build_model("srgnn", CATALOG_SIZE, 8, num_steps=0)
