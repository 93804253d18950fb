"""The router: an inference service whose catalog lives in catalog shards (ShardService).

Per batch it looks the sessions' distinct items up from the shards that hold them, runs the
encoder on those rows, sends the session representations to every shard and merges their exact
top-k. The encoder runs in the batcher's model thread; the fan-outs run on the serving loop
(grpc.aio), the thread waiting for them. Nothing it holds grows with the catalog.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import structlog
import torch
from torch import Tensor, nn

from .memory import own_memory
from .models import build_model
from .models.base import SessionEncoder, resolve_embedding_dim
from .recommender import (
    WARMUP_BATCH_SIZES,
    Recommendation,
    RecommenderConfig,
    SessionQuery,
    padded_sessions,
    validate_candidate_ids,
    validate_query,
)
from .runtime import prepare_encoder
from .scoring import top_k_of_candidates
from .shard_client import FanOutStats, ShardedCatalog, ShardSetMismatch

_log = structlog.get_logger()

T = TypeVar("T")


class EmbeddedEncoder(nn.Module):
    """An encoder fed the session's item rows instead of looking them up in its own table."""

    def __init__(self, encoder: SessionEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encoder.encode(embedded, item_seq, item_seq_len)


@dataclass(frozen=True, slots=True)
class RoutedRecommendation(Recommendation):
    """A recommendation and what its batch cost in calls to the catalog shards."""

    fanout: FanOutStats | None = None


def _padded(lists: Sequence[np.ndarray | None]) -> np.ndarray:
    """[len(lists), longest] int64, each row its list then zeros ([0, 0] for no lists)."""
    present = [ids for ids in lists if ids is not None]
    if not present:
        return np.zeros((0, 0), dtype=np.int64)
    counts = np.fromiter((ids.size for ids in present), np.int64, count=len(present))
    padded = np.zeros((len(present), int(counts.max())), dtype=np.int64)
    padded[np.arange(padded.shape[1]) < counts[:, None]] = np.concatenate(present)
    return padded


class RoutedRecommender:
    """The Recommender's surface (validate, recommend_batch, GetModelInfo's facts) over a
    ShardedCatalog. `bind(loop)` before the first batch: the fan-outs run on that loop."""

    # The item rows are on the shards: a router holds none (its memory does not grow with C).
    rows_held = 0
    table_bytes = 0

    def __init__(self, config: RecommenderConfig, catalog: ShardedCatalog) -> None:
        from .shardable import require_shardable

        if config.model_path:
            raise ShardSetMismatch(
                "--catalog-shards serves a registry model (--model), not a --model-path file"
            )
        if config.precision != "fp32":
            raise ShardSetMismatch(
                f"--precision {config.precision}: a router encodes in fp32; the shards score in their own "
                "precision (etude serve shard --precision)"
            )
        require_shardable(config.model)
        self.config = config
        self.catalog = catalog
        self.device = torch.device(config.device)
        self.embedding_dim = resolve_embedding_dim(
            config.catalog_size, config.embedding_dim, config.embedding_policy
        )
        encoder = build_model(
            config.model,
            config.catalog_size,
            self.embedding_dim,
            seed=config.seed,
            item_table=False,
            **dict(config.model_options),
        )
        catalog.check_serves(
            config.model, config.catalog_size, self.embedding_dim, config.seed, encoder.item_init().describe()
        )
        # The rows come from the shards: a one-row stand-in keeps the module movable and scriptable.
        encoder.item_embedding = nn.Embedding(
            1, self.embedding_dim, _weight=torch.zeros(1, self.embedding_dim)
        )
        self.encoder = EmbeddedEncoder(encoder).to(self.device).eval()
        self.served_encoder: Any = prepare_encoder(self.encoder, config.runtime)
        self.parameter_count = sum(p.numel() for p in encoder.parameters()) - self.embedding_dim
        # The encoder is built (no item tables here) and nothing has run yet.
        self.built_memory = own_memory()
        self.default_k = min(config.default_k, config.catalog_size)
        self.accuracy = None
        self.model_file = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the shard channels live on (the serving loop)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def _on_loop(self, call: Coroutine[Any, Any, T]) -> T:
        """Runs a fan-out on the serving loop and waits for it, from a model thread."""
        if self._loop is None:
            call.close()
            raise RuntimeError("RoutedRecommender.bind(loop) was not called")
        if threading.get_ident() == self._loop_thread:
            call.close()
            raise RuntimeError(
                "a router's batch must run in a model thread (inline_below_us = 0), not on the loop"
            )
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    # Candidates re-rank against the rows the shards look up: the very rows their Score ranks by
    # (one fp32 table per shard, its own re-scoring table), so a candidate keeps its full score.
    candidates_refused: str | None = None

    @property
    def max_candidates(self) -> int:
        return self.config.max_candidates

    def validate(self, item_ids: Sequence[int], k: int, candidate_ids: Sequence[int] = ()) -> SessionQuery:
        query = validate_query(
            item_ids, k, self.config.catalog_size, self.config.max_request_items, self.default_k
        )
        if len(candidate_ids) == 0:
            return query
        candidates = validate_candidate_ids(
            candidate_ids, self.config.catalog_size, self.config.max_candidates
        )
        return SessionQuery(query.item_ids, min(query.k, candidates.size), candidates)

    def warm_up(self, batch_sizes: Sequence[int] = WARMUP_BATCH_SIZES) -> None:
        """A few batches through shards and encoder (jit specialises on its first calls)."""
        rng = np.random.default_rng(0)
        for batch_size in batch_sizes:
            queries = [
                SessionQuery(
                    rng.integers(1, self.config.catalog_size + 1, size=length, dtype=np.int64), self.default_k
                )
                for length in rng.integers(1, 50 + 1, size=batch_size)
            ]
            for _ in range(2):
                self.recommend_batch(queries)
        _log.info(
            "warmed_up",
            batch_sizes=list(batch_sizes),
            runtime=self.config.runtime,
            shards=self.catalog.shard_count,
        )

    def recommend_batch(self, queries: Sequence[SessionQuery]) -> list[RoutedRecommendation]:
        """Lookups, encoder, scoring and merge for one batch (blocking; in a model thread)."""
        if not queries:
            return []
        item_seq, lengths = padded_sessions(queries)
        catalog_rows = [row for row, q in enumerate(queries) if q.candidate_ids is None]
        candidate_rows = [row for row, q in enumerate(queries) if q.candidate_ids is not None]
        # Candidates [b, m], right-padded with 0: their rows come with the sessions' in one lookup.
        candidates = _padded([queries[row].candidate_ids for row in candidate_rows])
        # Distinct items of the batch; `inverse` rebuilds [B, L] (and the candidates) from the rows.
        distinct, inverse = np.unique(
            np.concatenate([item_seq.ravel(), candidates.ravel()]), return_inverse=True
        )
        first_item = 1 if distinct[0] == 0 else 0
        started_ns = time.monotonic_ns()
        rows, lookup_bytes, lookup_calls = self._on_loop(self.catalog.lookup(distinct[first_item:]))
        lookup_ns = time.monotonic_ns() - started_ns
        table = np.zeros((distinct.size, self.embedding_dim), dtype=np.float32)
        table[first_item:] = rows
        embedded = torch.from_numpy(table[inverse[: item_seq.size].reshape(item_seq.shape)])
        with torch.inference_mode():
            seq = torch.from_numpy(item_seq).to(self.device)
            seq_len = torch.from_numpy(lengths).to(self.device)
            session_repr = self.served_encoder(embedded.to(self.device), seq, seq_len).float().cpu()
        ranked: dict[int, tuple[list[int], list[float]]] = {}
        score_bytes, compute_us, scored_ns = 0, 0, time.monotonic_ns()
        if catalog_rows:
            max_k = max(queries[row].k for row in catalog_rows)
            scores, ids, compute_us, score_bytes = self._on_loop(
                self.catalog.top_k(session_repr[catalog_rows].numpy(), max_k)
            )
            ranked.update(zip(catalog_rows, zip(ids.tolist(), scores.tolist(), strict=True), strict=True))
        fanout_ns = lookup_ns + time.monotonic_ns() - scored_ns
        if candidate_rows:
            candidate_table = torch.from_numpy(table[inverse[item_seq.size :].reshape(candidates.shape)])
            with torch.inference_mode():
                scores_t = torch.bmm(candidate_table, session_repr[candidate_rows].unsqueeze(2)).squeeze(2)
                max_k = max(queries[row].k for row in candidate_rows)
                top, top_ids = top_k_of_candidates(scores_t, torch.from_numpy(candidates), max_k)
            ranked.update(zip(candidate_rows, zip(top_ids.tolist(), top.tolist(), strict=True), strict=True))
        stats = FanOutStats(
            fanout_ns=fanout_ns,
            shard_compute_us=compute_us,
            wire_bytes=(lookup_bytes + score_bytes) // len(queries),
            lookup_calls=lookup_calls,
        )
        return [
            RoutedRecommendation(ranked[row][0][: q.k], ranked[row][1][: q.k], stats)
            for row, q in enumerate(queries)
        ]

    def details(self) -> dict[str, str]:
        infos = self.catalog.infos
        return {
            **self.encoder.encoder.details(),
            "precision": infos[0].precision if infos else "fp32",
            "embedding_policy": "explicit" if self.config.embedding_dim > 0 else self.config.embedding_policy,
            "default_k": str(self.default_k),
            "torch_threads": str(torch.get_num_threads()),
            "torch_version": torch.__version__,
            "seed": str(self.config.seed),
            "pid": str(os.getpid()),
            "catalog_shards": ",".join(self.catalog.addresses),
            "shard_strategy": infos[0].strategy if infos else "",
            "shard_items_owned": ",".join(str(info.items_owned) for info in infos),
            "shard_table_bytes": ",".join(str(info.table_bytes) for info in infos),
            "shard_hot_items": str(len(infos[0].hot_item_ids)) if infos else "0",
        }
