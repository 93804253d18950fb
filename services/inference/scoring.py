"""Scoring heads: exact maximum inner product search over the catalog, re-ranking of a
request's candidate list (its rows gathered, never the catalog scanned), and noop's stand-in.

Kept apart from the encoders so that one scorer serves every model and can later be sharded
(each shard a slice of the catalog returning its local top-k, merged by a router).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from .precision import PRECISION_OF_DTYPE, PRECISIONS, require_supported

if TYPE_CHECKING:
    from .models.base import SessionEncoder

__all__ = [
    "PRECISIONS",
    "CandidatesRefused",
    "CatalogScorer",
    "FirstItemsScorer",
    "Scorer",
    "chunk_items_for",
    "chunked_top_k",
    "top_k_of_candidates",
]

# Upper bound of one chunk's score block (B x chunk) on CUDA, and of every chunk anywhere: at
# B = 256 and C = 20M an unchunked fp32 score buffer would take 20 GB.
DEFAULT_MAX_SCORE_ELEMENTS = 1 << 25
# CPU chunks: the chunk's score block (B x chunk) is written by the product and read back by the
# block maxima and the gathers, so it should stay in the last-level cache (32 MiB here); every
# chunk costs half a dozen operator calls, each a barrier of the thread pool, so chunks are no
# smaller than 64k items. Measured with benchmarks/bench_scoring.py --chunk-sweep (1 thread,
# C = 1M, d = 32, bf16): 64k-256k items within noise of each other and 1.3-2x faster than 8k-16k
# at every B; the rule gives 256k items up to B = 32, 128k at 64, 64k from 128 on.
CPU_SCORE_BLOCK_BYTES = 32 << 20
MIN_CHUNK_ITEMS = 65_536
MAX_CHUNK_ITEMS = 262_144
# A chunk's scores are viewed as [B, SCORE_GROUPS, chunk / SCORE_GROUPS]; the maximum over the
# groups (a vectorised elementwise max of contiguous rows) leaves chunk / 16 block maxima, and
# only the k best blocks' items can hold the chunk's top k: torch.topk then sorts 16x fewer
# values, which is what made it cost more than the product.
SCORE_GROUPS = 16
# Reduced precision picks this many times k candidates with its own scores, then re-scores them
# in fp32: an item of the fp32 top k is lost only if rounding drops it 2k places. Re-scored
# against the fp32 table the encoder keeps anyway (no second copy), recall@21 is ~1; against
# the reduced table's rows upcast (a head whose table exists only in the scorer, CORE's
# normalised one), the table's own rounding limits it (~0.993 on random tables). The
# accuracy check measures it per model at start-up.
RESCORE_FACTOR = 2


def chunk_items_for(
    batch_size: int, device_type: str, max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS
) -> int:
    """Items per chunk for a batch of `batch_size` queries.

    CPU: the largest power of two whose fp32 score block fits CPU_SCORE_BLOCK_BYTES, within
    MIN_CHUNK_ITEMS..MAX_CHUNK_ITEMS. CUDA: max_score_elements / B (the GPU streams the table;
    bigger chunks mean fewer kernel launches). Never more than max_score_elements / B.
    """
    batch_size = max(1, batch_size)
    ceiling = max(1, max_score_elements // batch_size)
    if device_type == "cuda":
        return ceiling
    fits = max(1, CPU_SCORE_BLOCK_BYTES // (4 * batch_size))
    chunk = min(max(1 << (fits.bit_length() - 1), MIN_CHUNK_ITEMS), MAX_CHUNK_ITEMS)
    return min(chunk, ceiling)


def _chunk_top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Unsorted top-k (values, columns) of each row of one chunk's scores [B, n], k <= n."""
    batch_size, width = scores.size(0), scores.size(1) // SCORE_GROUPS
    if scores.size(1) % SCORE_GROUPS or width < 4 * k:
        return torch.topk(scores, k, dim=1, sorted=False)
    # Column g * width + j is in block j; only the k blocks with the highest maxima can hold
    # the row's top k (any other block's best is beaten by k items of those blocks).
    grouped = scores.view(batch_size, SCORE_GROUPS, width)
    _, blocks = torch.topk(grouped.amax(dim=1), k, dim=1, sorted=False)
    candidates = grouped.gather(2, blocks.unsqueeze(1).expand(batch_size, SCORE_GROUPS, k))
    top, picked = torch.topk(candidates.view(batch_size, SCORE_GROUPS * k), k, dim=1, sorted=False)
    columns = torch.div(picked, k, rounding_mode="floor") * width + blocks.gather(1, picked % k)
    return top, columns


def chunked_top_k(queries: Tensor, items: Tensor, k: int, chunk_items: int) -> tuple[Tensor, Tensor]:
    """Exact top-k (scores fp32 sorted best first, row ids into `items`) of `queries @ items.T`.

    Never writes more than B x chunk_items scores: one reused buffer per call holds a chunk's
    product, a chunk keeps its own top k, and the chunks' candidates are merged in fp32. Ties
    may be broken differently from one full torch.topk. `queries` must have `items`' dtype.
    """
    batch_size, catalog_size = queries.size(0), items.size(0)
    if not 1 <= k <= catalog_size:
        raise ValueError(f"k must be in 1..{catalog_size}, got {k}")
    chunk_items = max(1, min(chunk_items, catalog_size))
    buffer = torch.empty(batch_size * chunk_items, dtype=queries.dtype, device=queries.device)
    chunk_scores: list[Tensor] = []
    chunk_ids: list[Tensor] = []
    for start in range(0, catalog_size, chunk_items):
        chunk = items[start : start + chunk_items]
        scores = buffer[: batch_size * chunk.size(0)].view(batch_size, chunk.size(0))
        torch.mm(queries, chunk.T, out=scores)
        top, columns = _chunk_top_k(scores, min(k, chunk.size(0)))
        chunk_scores.append(top.float())
        chunk_ids.append(columns + start)
    if len(chunk_scores) == 1:
        scores, order = torch.sort(chunk_scores[0], dim=1, descending=True)
        return scores, torch.gather(chunk_ids[0], 1, order)
    scores, positions = torch.topk(torch.cat(chunk_scores, dim=1), k, dim=1)
    return scores, torch.gather(torch.cat(chunk_ids, dim=1), 1, positions)


class CandidatesRefused(ValueError):
    """A head that cannot score a candidate list exactly without a pass over the whole catalog."""


def top_k_of_candidates(scores: Tensor, candidate_ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k best of each row's candidates (scores fp32 best first, their ids); padding (id 0)
    scores -inf, so it comes last and a caller keeps at most its row's real candidates."""
    if not 1 <= k <= candidate_ids.size(1):
        raise ValueError(f"k must be in 1..{candidate_ids.size(1)} (the candidates per row), got {k}")
    top, order = torch.topk(scores.masked_fill(candidate_ids == 0, float("-inf")), k, dim=1)
    return top, torch.gather(candidate_ids, 1, order)


class Scorer(Protocol):
    """Maps session representations [B, d] to the top-k (scores [B, k] fp32, ids [B, k]).

    `item_seq` is the padded batch of sessions [B, L] the representations came from, for heads
    whose scores depend on the session's own items (RepeatNet's repeat mode); most ignore it.
    `score_candidates` ranks each row's own candidates instead of the catalog, with the scores
    `top_k` would give those items; `candidates_refused` is None when the head can, otherwise
    why it cannot (and `score_candidates` raises CandidatesRefused).
    """

    candidates_refused: str | None

    def top_k(
        self, session_repr: Tensor, k: int, item_seq: Tensor | None = None
    ) -> tuple[Tensor, Tensor]: ...

    def score_candidates(
        self, session_repr: Tensor, candidate_ids: Tensor, k: int, item_seq: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-k of each row's candidates [B, m] (item ids, right-padded with 0), k <= m."""
        ...


class CatalogScorer:
    """Exact top-k of `session_repr @ E.T` over items 1..C, never returning item 0.

    Item 0 is excluded by scoring the rows E[1:] and shifting the ids by one, which is the -inf
    mask on column 0 without writing it. The table is stored once, in `compute_dtype` (bf16 on
    CPUs with native bf16 and on CUDA, fp16 on CUDA); queries are cast to it, and a reduced
    precision's RESCORE_FACTOR x k candidates are re-scored in fp32, against `rescore_table`
    (an fp32 table that exists anyway, the encoder's own; rows normalised first with
    `rescore_normalised`, for a cosine head) when given, else against the reduced rows upcast.
    Scores come back in fp32.

    Candidate lists are scored in fp32 against the very rows the full pass takes its final
    scores from (the fp32 table, or at a reduced precision the re-scoring rows): one gather of
    the B x m rows and one batched product, so a candidate's score is its full-pass score.
    """

    candidates_refused: str | None = None

    def __init__(
        self,
        item_embeddings: Tensor,
        *,
        compute_dtype: torch.dtype = torch.float32,
        max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
        rescore_table: Tensor | None = None,
        rescore_normalised: bool = False,
    ) -> None:
        if item_embeddings.dim() != 2 or item_embeddings.size(0) < 2:
            raise ValueError(
                f"item_embeddings must be [catalog_size + 1, d] with catalog_size >= 1, "
                f"got {list(item_embeddings.shape)}"
            )
        if compute_dtype not in PRECISION_OF_DTYPE:
            raise ValueError(f"compute_dtype must be one of {list(PRECISION_OF_DTYPE)}, got {compute_dtype}")
        require_supported(PRECISION_OF_DTYPE[compute_dtype], item_embeddings.device)
        if max_score_elements < 1:
            raise ValueError(f"max_score_elements must be >= 1, got {max_score_elements}")
        self.catalog_size = item_embeddings.size(0) - 1
        self.compute_dtype = compute_dtype
        self.max_score_elements = max_score_elements
        # contiguous(): a [1:] view of an fp32 table would make every chunk product strided.
        self._items = item_embeddings.detach()[1:].to(compute_dtype).contiguous()
        self._rescore_items = self._items
        if rescore_table is not None and compute_dtype != torch.float32:
            if rescore_table.shape != item_embeddings.shape or rescore_table.dtype != torch.float32:
                raise ValueError(
                    f"rescore_table must be fp32 {list(item_embeddings.shape)}, "
                    f"got {rescore_table.dtype} {list(rescore_table.shape)}"
                )
            self._rescore_items = rescore_table.detach()[1:]
        # Cosine heads score a normalised table: normalise only the candidates' fp32 rows (the
        # rows of a separate, raw fp32 table; the scored table itself is normalised already).
        self._rescore_normalised = rescore_normalised and self._rescore_items is not self._items

    def top_k(self, session_repr: Tensor, k: int, item_seq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not 1 <= k <= self.catalog_size:
            raise ValueError(f"k must be in 1..{self.catalog_size}, got {k}")
        chunk_items = chunk_items_for(session_repr.size(0), self._items.device.type, self.max_score_elements)
        if self.compute_dtype == torch.float32:
            scores, ids = chunked_top_k(session_repr.float(), self._items, k, chunk_items)
            return scores, ids + 1
        candidates = min(self.catalog_size, RESCORE_FACTOR * k)
        _, candidate_ids = chunked_top_k(
            session_repr.to(self.compute_dtype), self._items, candidates, chunk_items
        )
        # [B, m, d] rows upcast, times the fp32 query: the merge is in fp32.
        rows = self._rescore_items[candidate_ids].float()
        if self._rescore_normalised:
            rows = torch.nn.functional.normalize(rows, dim=-1)
        exact = torch.bmm(rows, session_repr.float().unsqueeze(2)).squeeze(2)
        scores, order = torch.topk(exact, k, dim=1)
        return scores, torch.gather(candidate_ids, 1, order) + 1

    def score_candidates(
        self, session_repr: Tensor, candidate_ids: Tensor, k: int, item_seq: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        batch_size, width = candidate_ids.shape
        # Padding (0) gathers item 1's row, masked to -inf by top_k_of_candidates.
        rows = self._rescore_items.index_select(0, (candidate_ids.reshape(-1) - 1).clamp_min(0))
        rows = rows.view(batch_size, width, -1).float()
        if self._rescore_normalised:
            rows = torch.nn.functional.normalize(rows, dim=-1)
        scores = torch.bmm(rows, session_repr.float().unsqueeze(2)).squeeze(2)
        return top_k_of_candidates(scores, candidate_ids, k)


class FirstItemsScorer:
    """noop's head: items 1..k with zero scores, no catalog product (all noop scores are 0).

    Its full ranking is the catalog in id order, so a candidate list ranks in ascending id order.
    """

    candidates_refused: str | None = None

    def __init__(self, catalog_size: int, device: torch.device | str = "cpu") -> None:
        self.catalog_size = catalog_size
        self._device = torch.device(device)

    def score_candidates(
        self, session_repr: Tensor, candidate_ids: Tensor, k: int, item_seq: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        # Ascending ids score best: -id as the score ranks them, zeros are what noop answers.
        ranked = -candidate_ids.to(torch.float64)
        _, ids = top_k_of_candidates(ranked, candidate_ids, k)
        return torch.where(ids > 0, 0.0, float("-inf")).float(), ids

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
    """The shared head over the encoder's own item table (the registry's default); a reduced
    precision re-scores its candidates against that fp32 table, which the encoder keeps."""
    table = encoder.item_embeddings()
    return CatalogScorer(
        table,
        compute_dtype=compute_dtype,
        max_score_elements=max_score_elements,
        rescore_table=table,
    )


def first_items_scorer(
    encoder: SessionEncoder,
    *,
    compute_dtype: torch.dtype = torch.float32,
    max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
) -> Scorer:
    """noop's head: no catalog product at all."""
    return FirstItemsScorer(encoder.catalog_size, device=encoder.item_embeddings().device)
