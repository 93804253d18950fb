"""STAMP: the batched encoder against a per-session loop written from shared/models.md."""

from __future__ import annotations

from functools import partial

import torch
from etude.services.inference.models import build_model
from etude.services.inference.models.base import MAX_SESSION_LENGTH, SessionEncoder
from etude.services.inference.models.stamp import STAMP

from inference.batches import random_padded_batch

CATALOG_SIZE = 300


padded_batch = partial(random_padded_batch, catalog_size=CATALOG_SIZE)


def scaled_up(model: SessionEncoder) -> STAMP:
    """RecBole's N(0, 0.002) embeddings make every score tiny: widen them so errors would show."""
    assert isinstance(model, STAMP)
    with torch.no_grad():
        model.item_embedding.weight.mul_(300.0)
        model.b_a.normal_()
        model.mlp_a.bias.normal_()
        model.mlp_b.bias.normal_()
    return model


def reference_stamp(model: STAMP, session: list[int]) -> torch.Tensor:
    """STAMP for one session in float64, position by position (pads would add alpha * E[0] = 0)."""
    embeddings = model.item_embedding.weight.double()
    w1, w2, w3 = (linear.weight.double() for linear in (model.w1, model.w2, model.w3))
    w0 = model.w0.weight.double()[0]
    b_a = model.b_a.double()
    items = [embeddings[item] for item in session]
    last = items[-1]
    mean = torch.zeros_like(last)
    for x in items:
        mean = mean + x
    mean = mean / len(items)
    attended = mean.clone()
    for x in items:
        alpha = w0 @ torch.sigmoid(w1 @ x + w2 @ last + w3 @ mean + b_a)
        attended = attended + alpha * x
    h_s = torch.tanh(model.mlp_a.weight.double() @ attended + model.mlp_a.bias.double())
    h_t = torch.tanh(model.mlp_b.weight.double() @ last + model.mlp_b.bias.double())
    return h_s * h_t


def test_stamp_matches_a_per_session_reference() -> None:
    model = scaled_up(build_model("stamp", CATALOG_SIZE, 10, seed=3))
    seq, lengths = padded_batch(6, seed=1)
    seq[0, 1:] = 0
    lengths[0] = 1
    seq[1] = torch.randint(1, CATALOG_SIZE + 1, (MAX_SESSION_LENGTH,))
    lengths[1] = MAX_SESSION_LENGTH
    with torch.inference_mode():
        batched = model(seq, lengths)
    for row in range(6):
        expected = reference_stamp(model, seq[row, : lengths[row]].tolist())
        torch.testing.assert_close(batched[row].double(), expected, rtol=1e-5, atol=1e-6)


def test_stamp_zero_padding_does_not_change_a_session() -> None:
    model = scaled_up(build_model("stamp", CATALOG_SIZE, 12, seed=2))
    session = torch.tensor([[5, 17, 42, 17]])
    seq, lengths = padded_batch(9, seed=4)
    seq[4] = 0
    seq[4, :4] = session
    lengths[4] = 4
    with torch.inference_mode():
        alone = model(session, torch.tensor([4]))  # L = 4: no padding at all
        in_batch = model(seq, lengths)[4]
    torch.testing.assert_close(in_batch, alone[0], rtol=1e-5, atol=1e-6)


def test_stamp_has_no_mask_so_padding_must_be_item_zero() -> None:
    # models.md: no mask; zero pads vanish only because row 0 is zero. Non-zero ids after len
    # are summed like clicks (the API never sends them: sessions are right-padded with 0).
    model = scaled_up(build_model("stamp", CATALOG_SIZE, 12, seed=2))
    seq = torch.tensor([[5, 17, 42, 0, 0], [5, 17, 42, 9, 9]])
    with torch.inference_mode():
        out = model(seq, torch.tensor([3, 3]))
    assert not torch.allclose(out[0], out[1])


def test_stamp_shapes_and_zero_padding_row() -> None:
    model = build_model("stamp", CATALOG_SIZE, 18, seed=0)
    assert model.item_embeddings().shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(model.item_embeddings()[0]) == 0
    assert model(*padded_batch(4, seed=0)).shape == (4, 18)
