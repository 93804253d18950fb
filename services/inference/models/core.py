"""CORE, transformer variant (shared/models.md, model 5): a transformer weighs the session's raw
item embeddings; scores are cosine similarities divided by a temperature.

Its scorer normalises the item table once at load (the reference re-normalises it on every
request) and divides only the k returned scores by the temperature, which does not change the
ranking.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..scoring import DEFAULT_MAX_SCORE_ELEMENTS, CatalogScorer, Scorer
from .base import MAX_SESSION_LENGTH, ItemInit, SessionEncoder, item_embedding_table
from .transformer import TransformerEncoder, causal_padding_mask

DEFAULT_TEMPERATURE = 0.07
# Rows normalised per step: a step's fp32 temporaries stay ~2 MB whatever the catalog (at 64k rows
# the freed 16 MB temporaries left ~50-100 MB resident in the heap; 8k rows is also ~4x faster
# than normalising the whole table at once, measured at 4M x 64).
NORMALISE_STEP_ROWS = 8_192


def normalised_rows(table: Tensor, dtype: torch.dtype) -> Tensor:
    """normalize(table, dim=-1) in `dtype`, written a step of rows at a time into one table of
    that dtype: at a reduced precision the scorer's copy is the only one, never an fp32
    normalised table beside it (each row's result is what normalising the whole table and then
    casting gives: the norm is per row)."""
    out = torch.empty(table.shape, dtype=dtype, device=table.device)
    for start in range(0, table.size(0), NORMALISE_STEP_ROWS):
        stop = start + NORMALISE_STEP_ROWS
        out[start:stop] = F.normalize(table[start:stop], dim=-1)
    return out


class CORE(SessionEncoder):
    """X = E[seq]; H = transformer(LN(X + P), causal + padding mask);
    a = softmax_L(f(H)) with pads at -inf; s = normalize(sum_i a_i X_i), over the raw X.
    """

    def __init__(
        self,
        catalog_size: int,
        embedding_dim: int,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        temperature: float = DEFAULT_TEMPERATURE,
        max_session_length: int = MAX_SESSION_LENGTH,
    ) -> None:
        super().__init__(catalog_size, embedding_dim)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.inner_size = inner_size
        self.temperature = temperature
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.position_embedding = nn.Embedding(max_session_length, embedding_dim)
        self.layer_norm = nn.LayerNorm(embedding_dim, eps=1e-12)
        self.transformer = TransformerEncoder(embedding_dim, num_layers, num_heads, inner_size, 1e-12)
        self.weight_head = nn.Linear(embedding_dim, 1)
        # RecBole's CORE overrides its TransNet's initialisation: every parameter (LayerNorm
        # and biases included) uniform in +-1/sqrt(d). Then the padding row zeroed.
        bound = 1.0 / math.sqrt(embedding_dim)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        items = embedded  # [B, L, d]
        positions = self.position_embedding.weight[: item_seq.size(1)]
        hidden = self.transformer(self.layer_norm(items + positions), causal_padding_mask(item_seq))
        logits = self.weight_head(hidden).squeeze(-1)  # [B, L]
        weights = torch.softmax(logits.masked_fill(item_seq == 0, float("-inf")), dim=1)
        return F.normalize(torch.bmm(weights.unsqueeze(1), items).squeeze(1), dim=-1)

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's uniform(+-1/sqrt(d)), row 0 zeroed.
        return ItemInit("uniform", 1.0 / math.sqrt(self.embedding_dim))

    def details(self) -> dict[str, str]:
        return {
            **self.transformer.details(),
            "inner_size": str(self.inner_size),
            "positions": str(self.position_embedding.num_embeddings),
            "temperature": str(self.temperature),
            "scores": "cosine / temperature, item table normalised once at load",
        }


class CosineScorer:
    """Top-k of `s . normalize(E).T / temperature` for unit-norm sessions `s`.

    The normalised table is built once; ranking, chunking and precision are CatalogScorer's,
    and only the k returned scores are divided by the temperature. Candidate lists get the same
    cosine scores from their rows alone (normalised rows, or raw fp32 rows normalised on the fly).
    """

    candidates_refused: str | None = None

    def __init__(
        self,
        item_embeddings: Tensor,
        temperature: float,
        *,
        compute_dtype: torch.dtype = torch.float32,
        max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        with torch.no_grad():
            normalised = normalised_rows(item_embeddings.detach(), compute_dtype)
        # A reduced precision re-scores its candidates against the raw fp32 table (the encoder's,
        # kept anyway), normalising only those rows: no second fp32 table.
        self._catalog = CatalogScorer(
            normalised,
            compute_dtype=compute_dtype,
            max_score_elements=max_score_elements,
            rescore_table=item_embeddings if item_embeddings.dtype == torch.float32 else None,
            rescore_normalised=True,
        )
        self.catalog_size = self._catalog.catalog_size

    def top_k(self, session_repr: Tensor, k: int, item_seq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores, ids = self._catalog.top_k(session_repr, k)
        return scores / self.temperature, ids

    def score_candidates(
        self, session_repr: Tensor, candidate_ids: Tensor, k: int, item_seq: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        scores, ids = self._catalog.score_candidates(session_repr, candidate_ids, k)
        return scores / self.temperature, ids


def core_scorer(
    encoder: SessionEncoder,
    *,
    compute_dtype: torch.dtype = torch.float32,
    max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
) -> Scorer:
    """CORE's head: cosine similarity over a table normalised once, scores / temperature."""
    if not isinstance(encoder, CORE):
        raise TypeError(f"core_scorer needs a CORE encoder, got {type(encoder).__name__}")
    return CosineScorer(
        encoder.item_embeddings(),
        encoder.temperature,
        compute_dtype=compute_dtype,
        max_score_elements=max_score_elements,
    )


def build_core(
    catalog_size: int,
    embedding_dim: int,
    num_layers: int = 2,
    num_heads: int = 2,
    inner_size: int = 256,
    temperature: float = DEFAULT_TEMPERATURE,
) -> CORE:
    return CORE(
        catalog_size,
        embedding_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        inner_size=inner_size,
        temperature=temperature,
    )
