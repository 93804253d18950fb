"""Scoring heads: exact maximum inner product search over the catalog, and noop's stand-in.

Kept apart from the encoders so that one scorer serves every model and can later be sharded
(each shard a slice of the catalog returning its local top-k, merged by a router).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .models.base import SessionEncoder

# Above this many scores per matrix product the catalog is scored in chunks: at B = 256 and
# C = 20M an unchunked fp32 score buffer would take 20 GB.
DEFAULT_MAX_SCORE_ELEMENTS = 1 << 25

# Keys match etude.services.inference.options.PRECISION_NAMES.
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class Scorer(Protocol):
    """Maps session representations [B, d] to the top-k (scores [B, k] fp32, ids [B, k]).

    `item_seq` is the padded batch of sessions [B, L] the representations came from, for heads
    whose scores depend on the session's own items (RepeatNet's repeat mode); most ignore it.
    """

    def top_k(
        self, session_repr: Tensor, k: int, item_seq: Tensor | None = None
    ) -> tuple[Tensor, Tensor]: ...


class CatalogScorer:
    """Exact top-k of `session_repr @ E.T` over items 1..C, never returning item 0.

    Item 0 is excluded by scoring the rows E[1:] (a view) and shifting the ids by one, which
    is the -inf mask on column 0 without writing it. `compute_dtype` (bf16/fp16, CUDA only)
    keeps a reduced-precision copy of the table; scores come back in fp32.
    """

    def __init__(
        self,
        item_embeddings: Tensor,
        *,
        compute_dtype: torch.dtype = torch.float32,
        max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
    ) -> None:
        if item_embeddings.dim() != 2 or item_embeddings.size(0) < 2:
            raise ValueError(
                f"item_embeddings must be [catalog_size + 1, d] with catalog_size >= 1, "
                f"got {list(item_embeddings.shape)}"
            )
        if compute_dtype != torch.float32 and item_embeddings.device.type != "cuda":
            raise ValueError(f"reduced precision ({compute_dtype}) is only supported on CUDA")
        if max_score_elements < 1:
            raise ValueError(f"max_score_elements must be >= 1, got {max_score_elements}")
        self.catalog_size = item_embeddings.size(0) - 1
        self.compute_dtype = compute_dtype
        self.max_score_elements = max_score_elements
        self._items = item_embeddings.detach()[1:].to(compute_dtype)

    def top_k(self, session_repr: Tensor, k: int, item_seq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not 1 <= k <= self.catalog_size:
            raise ValueError(f"k must be in 1..{self.catalog_size}, got {k}")
        queries = session_repr.to(self.compute_dtype)
        batch_size = queries.size(0)
        chunk_size = max(1, self.max_score_elements // max(1, batch_size))
        if chunk_size >= self.catalog_size:
            scores, ids = torch.topk(queries @ self._items.T, k, dim=1)
            return scores.float(), ids + 1
        # Top-k per chunk, then the top-k of the candidates: exact, and the score buffer
        # stays at max_score_elements whatever the catalog size.
        chunk_scores: list[Tensor] = []
        chunk_ids: list[Tensor] = []
        for start in range(0, self.catalog_size, chunk_size):
            chunk = self._items[start : start + chunk_size]
            scores, ids = torch.topk(queries @ chunk.T, min(k, chunk.size(0)), dim=1)
            chunk_scores.append(scores)
            chunk_ids.append(ids + start)
        candidate_scores = torch.cat(chunk_scores, dim=1)
        scores, positions = torch.topk(candidate_scores, k, dim=1)
        ids = torch.gather(torch.cat(chunk_ids, dim=1), 1, positions)
        return scores.float(), ids + 1


class FirstItemsScorer:
    """noop's head: items 1..k with zero scores, no catalog product (all noop scores are 0)."""

    def __init__(self, catalog_size: int, device: torch.device | str = "cpu") -> None:
        self.catalog_size = catalog_size
        self._device = torch.device(device)

    def top_k(self, session_repr: Tensor, k: int, item_seq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not 1 <= k <= self.catalog_size:
            raise ValueError(f"k must be in 1..{self.catalog_size}, got {k}")
        batch_size = session_repr.size(0)
        ids = torch.arange(1, k + 1, device=self._device).expand(batch_size, k)
        return torch.zeros(batch_size, k, device=self._device), ids


def catalog_scorer(
    encoder: SessionEncoder,
    *,
    compute_dtype: torch.dtype = torch.float32,
    max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
) -> Scorer:
    """The shared head over the encoder's own item table (the registry's default)."""
    return CatalogScorer(
        encoder.item_embeddings(),
        compute_dtype=compute_dtype,
        max_score_elements=max_score_elements,
    )


def first_items_scorer(
    encoder: SessionEncoder,
    *,
    compute_dtype: torch.dtype = torch.float32,
    max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
) -> Scorer:
    """noop's head: no catalog product at all."""
    return FirstItemsScorer(encoder.catalog_size, device=encoder.item_embeddings().device)
