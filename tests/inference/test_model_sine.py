"""SINE against a per-session reference written out position by position, its (unmasked)
padding semantics, and the absence of the reference's process-wide anomaly detection.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import pytest
import torch
from etude.services.inference.models import build_model
from etude.services.inference.models.sine import SINE
from torch import Tensor

from inference.batches import random_padded_batch

CATALOG_SIZE = 200


padded_batch = partial(random_padded_batch, catalog_size=CATALOG_SIZE)


def total(terms: Iterable[Tensor]) -> Tensor:
    """A plain sum of a list of tensors, one term after another."""
    result = torch.zeros((), dtype=torch.float64)
    for term in terms:
        result = result + term
    return result


def softmax(values: list[Tensor]) -> list[Tensor]:
    top = torch.stack(values).max()
    exps = [torch.exp(v - top) for v in values]
    denominator = total(exps)
    return [e / denominator for e in exps]


def normalize(x: Tensor) -> Tensor:
    return x / torch.clamp(torch.sqrt((x**2).sum()), min=1e-12)


def layer_norm(layer: torch.nn.LayerNorm, x: Tensor) -> Tensor:
    centred = x - x.mean()
    return centred / torch.sqrt((centred**2).mean() + layer.eps) * layer.weight.double() + layer.bias.double()


@torch.no_grad()
def reference_sine(model: SINE, padded_session: list[int]) -> Tensor:
    """SINE for one session in float64, models.md's seven steps over every position of the
    padded row (the reference masks none of its softmaxes over L)."""
    x = [model.item_embedding.weight.double()[item] for item in padded_session]
    positions = range(len(x))
    w1, w2, w3, w4 = (w.double() for w in (model.w1, model.w2, model.w3, model.w4))
    prototypes = model.prototypes.weight.double()
    count = model.num_interests
    # 1. Concept activation.
    a = softmax([torch.tanh(x[t] @ w1) @ w2 for t in positions])
    z = total(a[t] * x[t] for t in positions)
    # 2. The K best prototypes, each scaled by the sigmoid of its score.
    scores = [float(prototypes[p] @ z) for p in range(model.num_prototypes)]
    best = sorted(range(model.num_prototypes), key=lambda p: scores[p], reverse=True)[:count]
    interests = [prototypes[p] * torch.sigmoid(torch.tensor(scores[p], dtype=torch.float64)) for p in best]
    # 3. P_kt: each position over the K interests.
    normed = [layer_norm(model.ln2, c) for c in interests]
    p_kt = [softmax([normalize(x[t] @ w3) @ normed[k] for k in range(count)]) for t in positions]
    # 4. P_tk: each interest over the positions.
    p_tk = [
        softmax([torch.tanh(x[t] @ model.w_k_1[k].double()) @ model.w_k_2[k].double() for t in positions])
        for k in range(count)
    ]
    # 5. Interest embeddings.
    phi = [normalize(total(p_kt[t][k] * p_tk[k][t] * x[t] for t in positions)) for k in range(count)]
    # 6. The intention.
    x_bar = [total(p_kt[t][k] * interests[k] for k in range(count)) for t in positions]
    w = softmax([torch.tanh(x_bar[t] @ w3) @ w4 for t in positions])
    intention = layer_norm(model.ln4, total(w[t] * x_bar[t] for t in positions))
    # 7. Aggregation.
    e = softmax([phi[k] @ intention / model.tau for k in range(count)])
    return total(e[k] * phi[k] for k in range(count))


@pytest.mark.parametrize(("dim", "options"), [(8, {}), (6, {"num_prototypes": 10, "num_interests": 4})])
def test_matches_a_per_session_reference(dim: int, options: dict) -> None:
    model = build_model("sine", CATALOG_SIZE, dim, seed=dim, **options)
    assert isinstance(model, SINE)
    seq, lengths = padded_batch(6, seed=1)
    with torch.inference_mode():
        batched = model(seq, lengths)
    for row in range(6):
        torch.testing.assert_close(
            batched[row].double(), reference_sine(model, seq[row].tolist()), atol=1e-6, rtol=1e-5
        )


def test_other_sessions_in_the_batch_do_not_change_it() -> None:
    model = build_model("sine", CATALOG_SIZE, 8, seed=2)
    seq, lengths = padded_batch(9, seed=4)
    with torch.inference_mode():
        alone = model(seq[4:5], lengths[4:5])[0]
        in_batch = model(seq, lengths)[4]
    torch.testing.assert_close(in_batch, alone, atol=1e-6, rtol=1e-5)


def test_padding_positions_count_as_zero_items_as_in_the_reference() -> None:
    """No mask: the pads enter every softmax over L with a zero embedding, so the padded
    length changes the representation, and matches the reference on the padded row."""
    model = build_model("sine", CATALOG_SIZE, 8, seed=3)
    session = [5, 17, 42, 17]
    assert isinstance(model, SINE)
    with torch.inference_mode():
        unpadded = model(torch.tensor([session]), torch.tensor([4]))[0]
        padded = model(torch.tensor([[*session, 0, 0, 0]]), torch.tensor([4]))[0]
    torch.testing.assert_close(
        padded.double(), reference_sine(model, [*session, 0, 0, 0]), atol=1e-6, rtol=1e-5
    )
    assert not torch.allclose(padded, unpadded)


def test_shape_zero_padding_row_options_and_no_anomaly_detection() -> None:
    model = build_model("sine", CATALOG_SIZE, 18, seed=0)
    assert not torch.is_anomaly_enabled()
    table = model.item_embeddings()
    assert table.shape == (CATALOG_SIZE + 1, 18)
    assert torch.count_nonzero(table[0]) == 0
    assert model(*padded_batch(4, seed=5)).shape == (4, 18)
    details = model.details()
    assert (details["prototypes"], details["interests"], details["tau"]) == ("50", "3", "0.1")
    with pytest.raises(ValueError, match="num_interests"):
        build_model("sine", CATALOG_SIZE, 8, num_prototypes=2, num_interests=3)
