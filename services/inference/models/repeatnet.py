"""RepeatNet (shared/models.md, model 9): a GRU with a repeat/explore mode switch, a repeat
decoder over the session's own items and an explore decoder over a second catalog matrix.

The final distribution P = p_rep P_rep + p_exp P_exp depends on the session's items, so the
split differs from the other models: the scriptable encoder returns everything the head needs
as one tensor, and `RepeatNetScorer` computes the exact top-k of P over the catalog in chunks,
never materialising the reference's dense one-hot [B, L, N] maps (nor, when chunked, [B, N]).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..precision import PRECISION_OF_DTYPE, require_supported
from ..scoring import DEFAULT_MAX_SCORE_ELEMENTS, CandidatesRefused, Scorer, chunk_items_for
from . import REPEATNET_CANDIDATES_REFUSED
from .base import ItemInit, SessionEncoder, item_embedding_table


class RepeatNet(SessionEncoder):
    """E [C+1, d]; GRU d -> H with bias; mode, repeat and explore attentions; M_e [C+1, 2H].

    forward returns [B, 2H + 2 + L] = [c_e ; h_t | p_rep, p_exp | beta_0..beta_{L-1}]: the
    explore query M_e multiplies, the mode probabilities and the repeat attention over the
    positions. `RepeatNetScorer` turns it into P.
    """

    def __init__(self, catalog_size: int, embedding_dim: int, hidden_size: int = 64) -> None:
        super().__init__(catalog_size, embedding_dim)
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        self.hidden_size = hidden_size
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.gru = nn.GRU(embedding_dim, hidden_size, num_layers=1, bias=True, batch_first=True)
        # Repeat/explore mode.
        self.w_re = nn.Linear(hidden_size, hidden_size, bias=False)
        self.u_re = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_re = nn.Linear(hidden_size, 1, bias=False)
        self.w_cre = nn.Linear(hidden_size, 2, bias=False)
        # Repeat decoder.
        self.w_r = nn.Linear(hidden_size, hidden_size, bias=False)
        self.u_r = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_r = nn.Linear(hidden_size, 1)
        # Explore decoder; M_e is the second catalog-sized matrix (row 0: item 0, as in the
        # reference, whose explore softmax spans all C + 1 columns).
        self.w_e = nn.Linear(hidden_size, hidden_size)
        self.u_e = nn.Linear(hidden_size, hidden_size)
        self.v_e = nn.Linear(hidden_size, 1)
        self.explore_matrix = nn.Linear(2 * hidden_size, catalog_size + 1, bias=False)
        # RecBole's initialisation: xavier_normal_ for the embedding and every linear weight,
        # zero biases; the GRU keeps torch's default. Then row 0 of E zeroed.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        states, _ = self.gru(self.item_embedding(item_seq))  # O [B, L, H]
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        last = states[rows, item_seq_len - 1]  # h_t
        pad = (item_seq == 0).unsqueeze(2)  # [B, L, 1]: masked with the reference's -1e9

        # Mode: softmax over all L positions, pads included (no mask, as in the reference).
        mode_logits = self.v_re(torch.tanh(self.u_re(states) + self.w_re(last).unsqueeze(1)))
        mode_context = (torch.softmax(mode_logits, dim=1) * states).sum(dim=1)
        modes = torch.softmax(self.w_cre(mode_context), dim=1)  # [p_rep, p_exp]

        # Repeat attention beta over the positions, pads masked.
        repeat_logits = self.v_r(torch.tanh(self.u_r(states) + self.w_r(last).unsqueeze(1)))
        beta = torch.softmax(repeat_logits.masked_fill(pad, -1e9), dim=1)  # [B, L, 1]

        # Explore attention gamma, pads masked; the query [c_e ; h_t] for M_e.
        explore_logits = self.v_e(torch.tanh(self.u_e(states) + self.w_e(last).unsqueeze(1)))
        gamma = torch.softmax(explore_logits.masked_fill(pad, -1e9), dim=1)
        explore_context = (gamma * states).sum(dim=1)

        return torch.cat([explore_context, last, modes, beta.squeeze(2)], dim=1)

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's xavier_normal_, row 0 zeroed.
        return ItemInit.xavier_normal(self.catalog_size + 1, self.embedding_dim)

    def explore_items(self) -> Tensor:
        """M_e [C+1, 2H]: the explore decoder's catalog matrix (row 0: item 0)."""
        return self.explore_matrix.weight

    def details(self) -> dict[str, str]:
        return {
            "hidden_size": str(self.hidden_size),
            "gru_layers": "1",
            "gru_bias": "true",
            "explore_matrix": f"[{self.catalog_size + 1}, {2 * self.hidden_size}]",
            "scores": "probabilities P = p_rep P_rep + p_exp P_exp",
        }


def build_repeatnet(catalog_size: int, embedding_dim: int, hidden_size: int = 64) -> RepeatNet:
    return RepeatNet(catalog_size, embedding_dim, hidden_size=hidden_size)


class RepeatNetScorer:
    """Exact top-k of RepeatNet's P over items 1..C, scores being the probabilities P.

    P is p_exp softmax(explore logits) off the session and p_rep P_rep on it, so the top-k
    of P lies in (top-k explore items outside the session) union (session items). Per chunk of
    the catalog: logits, session items masked to -inf, the chunk's logsumexp and its top-k;
    then one logsumexp over the chunks (and item 0, which the reference's softmax includes)
    normalises the candidates, which are merged with the session items' repeat probabilities.
    Work is O(B C 2H) for the logits plus O(B L^2) for the session: no [B, L, N] and, with
    more than one chunk, no [B, N].

    Candidate lists are refused: an explored item's probability is its logit normalised by the
    logsumexp over the whole catalog, so no subset of rows gives its full-catalog score.
    """

    candidates_refused: str | None = REPEATNET_CANDIDATES_REFUSED

    def __init__(
        self,
        explore_items: Tensor,
        hidden_size: int,
        *,
        compute_dtype: torch.dtype = torch.float32,
        max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
    ) -> None:
        if explore_items.dim() != 2 or explore_items.size(0) < 2 or explore_items.size(1) != 2 * hidden_size:
            raise ValueError(
                f"explore_items must be [catalog_size + 1, {2 * hidden_size}] with catalog_size >= 1, "
                f"got {list(explore_items.shape)}"
            )
        if compute_dtype not in PRECISION_OF_DTYPE:
            raise ValueError(f"compute_dtype must be one of {list(PRECISION_OF_DTYPE)}, got {compute_dtype}")
        require_supported(PRECISION_OF_DTYPE[compute_dtype], explore_items.device)
        if max_score_elements < 1:
            raise ValueError(f"max_score_elements must be >= 1, got {max_score_elements}")
        self.catalog_size = explore_items.size(0) - 1
        self.hidden_size = hidden_size
        self.compute_dtype = compute_dtype
        self.max_score_elements = max_score_elements
        table = explore_items.detach()
        self._items = table[1:].to(compute_dtype)
        self._padding_item = table[0].to(compute_dtype)

    def top_k(self, session_repr: Tensor, k: int, item_seq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if item_seq is None:
            raise ValueError("RepeatNet's scores depend on the session's items: item_seq is required")
        if not 1 <= k <= self.catalog_size:
            raise ValueError(f"k must be in 1..{self.catalog_size}, got {k}")
        width = 2 * self.hidden_size
        batch_size, length = item_seq.shape
        if session_repr.shape != (batch_size, width + 2 + length):
            raise ValueError(
                f"session_repr must be [{batch_size}, {width + 2 + length}] for item_seq "
                f"{list(item_seq.shape)}, got {list(session_repr.shape)}"
            )
        session_repr = session_repr.float()
        queries = session_repr[:, :width].to(self.compute_dtype)
        p_repeat = session_repr[:, width : width + 1]
        p_explore = session_repr[:, width + 1 : width + 2]
        beta = session_repr[:, width + 2 :]

        in_session = item_seq > 0
        inf = float("inf")
        # Item 0 is in the reference's softmax normaliser (never masked, never returned).
        log_normalisers = [(queries @ self._padding_item).float().unsqueeze(1)]
        candidate_logits: list[Tensor] = []
        candidate_ids: list[Tensor] = []
        chunk_size = chunk_items_for(batch_size, self._items.device.type, self.max_score_elements)
        for start in range(0, self.catalog_size, chunk_size):
            chunk = self._items[start : start + chunk_size]
            logits = (queries @ chunk.T).float()
            # Session items of this chunk -> -inf, in one O(L) scatter: amin with -inf at
            # their columns, with +inf (no change) for pads and items outside the chunk.
            column = item_seq - (start + 1)
            inside = in_session & (column >= 0) & (column < chunk.size(0))
            logits.scatter_reduce_(
                1, column.clamp(0, chunk.size(0) - 1), torch.where(inside, -inf, inf), reduce="amin"
            )
            log_normalisers.append(torch.logsumexp(logits, dim=1, keepdim=True))
            top_logits, top_columns = torch.topk(logits, min(k, chunk.size(0)), dim=1)
            candidate_logits.append(top_logits)
            candidate_ids.append(top_columns + (start + 1))
        log_normaliser = torch.logsumexp(torch.cat(log_normalisers, dim=1), dim=1, keepdim=True)
        explore_logits = torch.cat(candidate_logits, dim=1)
        # Masked candidates (session items, only drawn when a chunk has fewer than k others)
        # are scored -inf here: their probability comes from the repeat side below.
        explore_scores = torch.where(
            torch.isneginf(explore_logits), -inf, p_explore * torch.exp(explore_logits - log_normaliser)
        )

        # Repeat side: P_rep of each distinct session item, summed over its positions, kept at
        # its first occurrence only.
        positions = torch.arange(length, device=item_seq.device)
        same = item_seq.unsqueeze(2) == item_seq.unsqueeze(1)  # [B, L, L]
        first = torch.where(same, positions, length).amin(dim=2)  # [B, L]
        repeat_probs = torch.zeros_like(beta).scatter_add_(1, first, p_repeat * beta)
        keep = in_session & (first == positions)
        session_scores = torch.where(keep, repeat_probs, -inf)

        scores, picked = torch.topk(torch.cat([explore_scores, session_scores], dim=1), k, dim=1)
        ids = torch.gather(torch.cat([torch.cat(candidate_ids, dim=1), item_seq], dim=1), 1, picked)
        return scores, ids

    def score_candidates(
        self, session_repr: Tensor, candidate_ids: Tensor, k: int, item_seq: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        raise CandidatesRefused(f"candidate_ids: {self.candidates_refused}")


def repeatnet_scorer(
    encoder: SessionEncoder,
    *,
    compute_dtype: torch.dtype = torch.float32,
    max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
) -> Scorer:
    """RepeatNet's head over the explore matrix M_e of `encoder` (a RepeatNet)."""
    if not isinstance(encoder, RepeatNet):
        raise TypeError(f"repeatnet_scorer needs a RepeatNet encoder, got {type(encoder).__name__}")
    return RepeatNetScorer(
        encoder.explore_items(),
        encoder.hidden_size,
        compute_dtype=compute_dtype,
        max_score_elements=max_score_elements,
    )
