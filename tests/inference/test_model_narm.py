"""NARM: the batched encoder against a per-session loop written from shared/models.md."""

from __future__ import annotations

from functools import partial

import torch
from etude.services.inference.models import build_model
from etude.services.inference.models.base import MAX_SESSION_LENGTH
from etude.services.inference.models.narm import NARM

from inference.batches import random_padded_batch

CATALOG_SIZE = 300


padded_batch = partial(random_padded_batch, catalog_size=CATALOG_SIZE)


def reference_narm(model: NARM, session: list[int]) -> torch.Tensor:
    """NARM for one session in float64: the GRU step by step, the attention position by position."""
    embeddings = model.item_embedding.weight.double()
    w_ih, w_hh = (weight.double() for weight in model.gru.all_weights[0])  # gates r, z, n; no bias
    w_ir, w_iz, w_in = w_ih.chunk(3)
    w_hr, w_hz, w_hn = w_hh.chunk(3)
    hidden = torch.zeros(model.hidden_size, dtype=torch.float64)
    states = []
    for item in session:
        x = embeddings[item]
        reset = torch.sigmoid(w_ir @ x + w_hr @ hidden)
        update = torch.sigmoid(w_iz @ x + w_hz @ hidden)
        candidate = torch.tanh(w_in @ x + reset * (w_hn @ hidden))
        hidden = (1 - update) * candidate + update * hidden
        states.append(hidden)
    last = states[-1]
    a_1, a_2 = model.a_1.weight.double(), model.a_2.weight.double()
    v = model.v_t.weight.double()[0]
    local = torch.zeros(model.hidden_size, dtype=torch.float64)
    for state in states:  # pads have m_i = 0, hence alpha_i = 0: only real positions count
        alpha = v @ torch.sigmoid(a_1 @ state + a_2 @ last)
        local = local + alpha * state
    return model.b.weight.double() @ torch.cat([local, last])


def test_narm_matches_a_per_session_reference() -> None:
    model = build_model("narm", CATALOG_SIZE, 10, seed=3)
    assert isinstance(model, NARM)
    seq, lengths = padded_batch(6, seed=1)
    lengths[0] = 1
    lengths[1] = MAX_SESSION_LENGTH
    seq[1] = torch.randint(1, CATALOG_SIZE + 1, (MAX_SESSION_LENGTH,))
    seq[0, 1:] = 0
    with torch.inference_mode():
        batched = model(seq, lengths)
    for row in range(6):
        expected = reference_narm(model, seq[row, : lengths[row]].tolist())
        torch.testing.assert_close(batched[row].double(), expected, rtol=1e-5, atol=1e-6)


def test_narm_padding_does_not_change_a_session() -> None:
    model = build_model("narm", CATALOG_SIZE, 12, seed=2)
    session = torch.tensor([[5, 17, 42, 17]])
    seq, lengths = padded_batch(9, seed=4)
    seq[4] = 0
    seq[4, :4] = session
    lengths[4] = 4
    with torch.inference_mode():
        alone = model(session, torch.tensor([4]))  # L = 4: no padding at all
        in_batch = model(seq, lengths)[4]
    torch.testing.assert_close(in_batch, alone[0], rtol=1e-5, atol=1e-6)


def test_narm_shapes_options_and_zero_padding_row() -> None:
    model = build_model("narm", CATALOG_SIZE, 18, seed=0, hidden_size=32)
    assert model.item_embeddings().shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(model.item_embeddings()[0]) == 0
    assert model.details()["hidden_size"] == "32"
    assert model(*padded_batch(4, seed=0)).shape == (4, 18)
    assert build_model("narm", CATALOG_SIZE, 8).details()["hidden_size"] == "128"
