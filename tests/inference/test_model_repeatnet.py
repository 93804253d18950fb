"""RepeatNet: the encoder against a per-session loop, and its scorer against the dense P."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
from etude.services.inference.models import MODELS, build_model
from etude.services.inference.models.base import MAX_SESSION_LENGTH
from etude.services.inference.models.repeatnet import RepeatNet, RepeatNetScorer
from torch.utils._python_dispatch import TorchDispatchMode

from inference.batches import random_padded_batch

CATALOG_SIZE = 200
HIDDEN = 16


padded_batch = partial(random_padded_batch, catalog_size=CATALOG_SIZE)


def model(catalog_size: int = CATALOG_SIZE, seed: int = 3) -> RepeatNet:
    encoder = build_model("repeatnet", catalog_size, 10, seed=seed, hidden_size=HIDDEN)
    assert isinstance(encoder, RepeatNet)
    return encoder


def reference_encoding(net: RepeatNet, session: list[int]) -> torch.Tensor:
    """[c_e ; h_t | p_rep, p_exp | beta] for one session, float64, position by position.

    The GRU runs over all L = 50 positions (pads are E[0] = 0) because the mode attention
    attends to every position, pads included, as the reference does.
    """
    double = {name: p.detach().double() for name, p in net.named_parameters()}
    embeddings = double["item_embedding.weight"]
    w_ir, w_iz, w_in = double["gru.weight_ih_l0"].chunk(3)
    w_hr, w_hz, w_hn = double["gru.weight_hh_l0"].chunk(3)
    b_ir, b_iz, b_in = double["gru.bias_ih_l0"].chunk(3)
    b_hr, b_hz, b_hn = double["gru.bias_hh_l0"].chunk(3)
    padded = session + [0] * (MAX_SESSION_LENGTH - len(session))
    hidden = torch.zeros(net.hidden_size, dtype=torch.float64)
    states = []
    for item in padded:
        x = embeddings[item]
        reset = torch.sigmoid(w_ir @ x + b_ir + w_hr @ hidden + b_hr)
        update = torch.sigmoid(w_iz @ x + b_iz + w_hz @ hidden + b_hz)
        candidate = torch.tanh(w_in @ x + b_in + reset * (w_hn @ hidden + b_hn))
        hidden = (1 - update) * candidate + update * hidden
        states.append(hidden)
    last = states[len(session) - 1]

    def attention(prefix: str, positions: int, bias: bool) -> list[float]:
        w, u = double[f"w_{prefix}.weight"], double[f"u_{prefix}.weight"]
        v = double[f"v_{prefix}.weight"][0]
        w_b = double[f"w_{prefix}.bias"] if f"w_{prefix}.bias" in double else 0.0
        u_b = double[f"u_{prefix}.bias"] if f"u_{prefix}.bias" in double else 0.0
        v_b = double[f"v_{prefix}.bias"][0] if bias else 0.0
        logits = [v @ torch.tanh(u @ states[i] + u_b + w @ last + w_b) + v_b for i in range(positions)]
        top = max(float(value) for value in logits)
        exps = [torch.exp(value - top) for value in logits]
        total = sum(exps)
        return [float(e / total) for e in exps]

    mode_weights = attention("re", MAX_SESSION_LENGTH, bias=False)  # no padding mask
    mode_context = torch.stack([a * states[i] for i, a in enumerate(mode_weights)]).sum(dim=0)
    modes = torch.softmax(double["w_cre.weight"] @ mode_context, dim=0)
    beta = attention("r", len(session), bias=True)  # pads: exp(-1e9) = 0
    gamma = attention("e", len(session), bias=True)
    explore_context = torch.stack([g * states[i] for i, g in enumerate(gamma)]).sum(dim=0)
    beta_padded = torch.tensor(beta + [0.0] * (MAX_SESSION_LENGTH - len(session)), dtype=torch.float64)
    return torch.cat([explore_context, last, modes, beta_padded])


def dense_probabilities(net: RepeatNet, session_repr: torch.Tensor, session: list[int]) -> torch.Tensor:
    """P over all C + 1 columns straight from models.md, float64; column 0 set to -inf."""
    width = 2 * net.hidden_size
    repr64 = session_repr.double()
    logits = net.explore_items().detach().double() @ repr64[:width]
    for item in session:
        logits[item] = float("-inf")
    p_explore = torch.softmax(logits, dim=0)
    p_repeat = torch.zeros_like(p_explore)
    for position, item in enumerate(session):
        p_repeat[item] += repr64[width + 2 + position]
    probabilities = repr64[width] * p_repeat + repr64[width + 1] * p_explore
    probabilities[0] = float("-inf")
    return probabilities


def check_exact_top_k(
    net: RepeatNet, scorer: RepeatNetScorer, seq: torch.Tensor, lengths: torch.Tensor, k: int
) -> None:
    with torch.inference_mode():
        session_repr = net(seq, lengths).clone()
        # Random weights give p_rep ~ 0.5; make every other session repeat-heavy so that the
        # session items (repeated ones summed once) lead the ranking.
        session_repr[::2, 2 * net.hidden_size : 2 * net.hidden_size + 2] = torch.tensor([0.95, 0.05])
        scores, ids = scorer.top_k(session_repr, k, seq)
    assert scores.dtype == torch.float32 and scores.shape == ids.shape == (seq.size(0), k)
    for row in range(seq.size(0)):
        dense = dense_probabilities(net, session_repr[row], seq[row, : lengths[row]].tolist())
        expected = torch.topk(dense, k).values
        torch.testing.assert_close(scores[row].double(), expected, rtol=1e-5, atol=1e-9)
        # The ids carry the scores they were returned with, are distinct, and never item 0.
        torch.testing.assert_close(dense[ids[row]], scores[row].double(), rtol=1e-5, atol=1e-9)
        assert len(set(ids[row].tolist())) == k
        assert ids[row].min() >= 1


def test_encoder_matches_a_per_session_reference() -> None:
    net = model()
    seq, lengths = padded_batch(6, seed=1, max_item=12)  # repeated items within sessions
    seq[0, 1:] = 0
    lengths[0] = 1
    seq[1] = torch.randint(1, 13, (MAX_SESSION_LENGTH,))
    lengths[1] = MAX_SESSION_LENGTH
    with torch.inference_mode():
        batched = net(seq, lengths)
    assert batched.shape == (6, 2 * HIDDEN + 2 + MAX_SESSION_LENGTH)
    for row in range(6):
        expected = reference_encoding(net, seq[row, : lengths[row]].tolist())
        torch.testing.assert_close(batched[row].double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [1, 5, 21, 80])
@pytest.mark.parametrize("max_score_elements", [1 << 25, 24 * 7])  # one chunk; chunks of 7 items
def test_scorer_returns_the_exact_top_k_of_the_dense_distribution(k: int, max_score_elements: int) -> None:
    net = model()
    scorer = RepeatNetScorer(net.explore_items(), HIDDEN, max_score_elements=max_score_elements)
    seq, lengths = padded_batch(24, seed=k, max_item=30)  # many repeats; k often > distinct items
    lengths[:4] = torch.tensor([1, 2, 3, MAX_SESSION_LENGTH])
    seq[:4] = torch.randint(1, 31, (4, MAX_SESSION_LENGTH))
    seq[torch.arange(MAX_SESSION_LENGTH)[None, :] >= lengths[:, None]] = 0
    check_exact_top_k(net, scorer, seq, lengths, k)


@pytest.mark.parametrize("max_score_elements", [1 << 25, 3 * 7])
def test_scorer_covers_the_whole_catalog_when_sessions_fill_whole_chunks(max_score_elements: int) -> None:
    # C = 30: the first session holds items 1..7, a whole chunk of 7, so that chunk's explore
    # part is all -inf; k = C asks for every item, session ones included.
    net = model(catalog_size=30)
    scorer = RepeatNetScorer(net.explore_items(), HIDDEN, max_score_elements=max_score_elements)
    seq = torch.zeros(3, MAX_SESSION_LENGTH, dtype=torch.int64)
    seq[0, :10] = torch.tensor([1, 2, 3, 4, 5, 6, 7, 3, 3, 1])
    seq[1, :4] = torch.tensor([30, 29, 30, 29])
    seq[2, :1] = 8
    lengths = torch.tensor([10, 4, 1])
    for k in (1, 8, 23, 30):
        check_exact_top_k(net, scorer, seq, lengths, k)


def test_item_zero_is_never_returned_but_counts_in_the_normaliser() -> None:
    net = model(catalog_size=20)
    seq, lengths = padded_batch(4, seed=5, catalog_size=20)
    with torch.inference_mode():
        session_repr = net(seq, lengths)
        query = session_repr[:, : 2 * HIDDEN]
        # Make item 0 the explore decoder's favourite by far for every session.
        net.explore_matrix.weight[0] = 50.0 * query.sum(dim=0) / query.norm(dim=1).min()
    scorer = RepeatNetScorer(net.explore_items(), HIDDEN)
    check_exact_top_k(net, scorer, seq, lengths, 20)


def test_scorer_never_builds_a_session_by_catalog_tensor() -> None:
    net = model(catalog_size=5_000)
    batch_size, chunk = 8, 100
    scorer = RepeatNetScorer(net.explore_items(), HIDDEN, max_score_elements=batch_size * chunk)
    seq, lengths = padded_batch(batch_size, seed=9, catalog_size=5_000)
    with torch.inference_mode():
        session_repr = net(seq, lengths)

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, tuple | list) else (out,):
                if isinstance(tensor, torch.Tensor):
                    self.largest = max(self.largest, tensor.numel())
            return out

    with torch.inference_mode(), LargestOutput() as mode:
        scorer.top_k(session_repr, 21, seq)
    # Chunks of [B, 100] logits and [B, L, L] equality; never [B, N] (40,000), let alone [B, L, N].
    assert mode.largest <= batch_size * max(chunk, MAX_SESSION_LENGTH * MAX_SESSION_LENGTH)
    assert mode.largest < batch_size * 5_000


def test_a_session_scores_the_same_alone_and_in_a_batch_of_longer_ones() -> None:
    net = model()
    scorer = RepeatNetScorer(net.explore_items(), HIDDEN, max_score_elements=9 * 50)
    alone = torch.zeros(1, MAX_SESSION_LENGTH, dtype=torch.int64)
    alone[0, :4] = torch.tensor([5, 17, 42, 17])
    seq, lengths = padded_batch(9, seed=4)
    seq[4] = alone[0]
    lengths[4] = 4
    with torch.inference_mode():
        repr_alone = net(alone, torch.tensor([4]))
        repr_batch = net(seq, lengths)
        scores_alone, ids_alone = RepeatNetScorer(net.explore_items(), HIDDEN).top_k(repr_alone, 21, alone)
        scores_batch, ids_batch = scorer.top_k(repr_batch, 21, seq)
    torch.testing.assert_close(repr_batch[4], repr_alone[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(scores_batch[4], scores_alone[0], rtol=1e-5, atol=1e-9)
    assert torch.equal(ids_batch[4], ids_alone[0])


def test_mode_attention_sees_the_padding_like_the_reference() -> None:
    # models.md: the mode softmax has no padding mask, so [p_rep, p_exp] depend on the 50 - len
    # pad states; serving always pads to L = 50 as the reference did.
    net = model()
    session = torch.tensor([[5, 17, 42]])
    padded = torch.zeros(1, MAX_SESSION_LENGTH, dtype=torch.int64)
    padded[0, :3] = session
    width = 2 * HIDDEN
    with torch.inference_mode():
        short = net(session, torch.tensor([3]))
        full = net(padded, torch.tensor([3]))
    torch.testing.assert_close(full[0, :width], short[0, :width])  # gamma and h_t ignore pads
    torch.testing.assert_close(full[0, width + 2 : width + 5], short[0, width + 2 :])  # beta too
    assert not torch.allclose(full[0, width : width + 2], short[0, width : width + 2])


def test_shapes_zero_padding_row_and_registry_scorer() -> None:
    net = model()
    assert net.item_embeddings().shape == (CATALOG_SIZE + 1, 10)
    assert torch.count_nonzero(net.item_embeddings()[0]) == 0
    assert net.explore_items().shape == (CATALOG_SIZE + 1, 2 * HIDDEN)
    assert build_model("repeatnet", 50, 8).details()["hidden_size"] == "64"
    scorer = MODELS["repeatnet"].make_scorer(net, compute_dtype=torch.float32, max_score_elements=1000)
    assert isinstance(scorer, RepeatNetScorer)
    seq, lengths = padded_batch(3, seed=0)
    with torch.inference_mode():
        session_repr = net(seq, lengths)
    with pytest.raises(ValueError, match="item_seq is required"):
        scorer.top_k(session_repr, 5)
    with pytest.raises(ValueError, match="k must be in"):
        scorer.top_k(session_repr, CATALOG_SIZE + 1, seq)
    with pytest.raises(ValueError, match="session_repr must be"):
        scorer.top_k(session_repr[:, :-1], 5, seq)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scorer_on_cuda_matches_the_cpu_scorer() -> None:
    net = model(catalog_size=50_000)
    seq, lengths = padded_batch(16, seed=2, catalog_size=50_000, max_item=200)
    with torch.inference_mode():
        session_repr = net(seq, lengths)
        expected_scores, expected_ids = RepeatNetScorer(net.explore_items(), HIDDEN).top_k(
            session_repr, 21, seq
        )
        cuda = RepeatNetScorer(net.explore_items().cuda(), HIDDEN, max_score_elements=16 * 7_000)
        scores, ids = cuda.top_k(session_repr.cuda(), 21, seq.cuda())
        bf16 = RepeatNetScorer(net.explore_items().cuda(), HIDDEN, compute_dtype=torch.bfloat16)
        bf16_scores, _ = bf16.top_k(session_repr.cuda(), 21, seq.cuda())
    torch.testing.assert_close(scores.cpu(), expected_scores, rtol=1e-4, atol=1e-9)
    assert torch.equal(ids.cpu(), expected_ids)
    torch.testing.assert_close(bf16_scores.cpu(), expected_scores, rtol=5e-2, atol=1e-6)
