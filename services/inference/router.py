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

from ..shard.shardable import ROUTER_CANDIDATES_REFUSED
from .models import build_model
from .models.base import SessionEncoder, resolve_embedding_dim
from .recommender import (
    WARMUP_BATCH_SIZES,
    InvalidCandidates,
    Recommendation,
    RecommenderConfig,
    SessionQuery,
    padded_sessions,
    validate_query,
)
from .runtime import prepare_encoder
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


class RoutedRecommender:
    """The Recommender's surface (validate, recommend_batch, GetModelInfo's facts) over a
    ShardedCatalog. `bind(loop)` before the first batch: the fan-outs run on that loop."""

    def __init__(self, config: RecommenderConfig, catalog: ShardedCatalog) -> None:
        from ..shard.shardable import require_shardable

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

    candidates_refused = ROUTER_CANDIDATES_REFUSED
    max_candidates = 0

    def validate(self, item_ids: Sequence[int], k: int, candidate_ids: Sequence[int] = ()) -> SessionQuery:
        if len(candidate_ids) > 0:
            raise InvalidCandidates(f"candidate_ids refused: {ROUTER_CANDIDATES_REFUSED}")
        return validate_query(
            item_ids, k, self.config.catalog_size, self.config.max_request_items, self.default_k
        )

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
        # Distinct items of the batch; `inverse` rebuilds [B, L] from the rows looked up.
        distinct, inverse = np.unique(item_seq, return_inverse=True)
        first_item = 1 if distinct[0] == 0 else 0
        started_ns = time.monotonic_ns()
        rows, lookup_bytes, lookup_calls = self._on_loop(self.catalog.lookup(distinct[first_item:]))
        lookup_ns = time.monotonic_ns() - started_ns
        table = np.zeros((distinct.size, self.embedding_dim), dtype=np.float32)
        table[first_item:] = rows
        embedded = torch.from_numpy(table[inverse.reshape(item_seq.shape)])
        with torch.inference_mode():
            seq = torch.from_numpy(item_seq).to(self.device)
            seq_len = torch.from_numpy(lengths).to(self.device)
            session_repr = self.served_encoder(embedded.to(self.device), seq, seq_len).float().cpu().numpy()
        max_k = max(q.k for q in queries)
        scored_ns = time.monotonic_ns()
        scores, ids, compute_us, score_bytes = self._on_loop(self.catalog.top_k(session_repr, max_k))
        stats = FanOutStats(
            fanout_ns=lookup_ns + time.monotonic_ns() - scored_ns,
            shard_compute_us=compute_us,
            wire_bytes=(lookup_bytes + score_bytes) // len(queries),
            lookup_calls=lookup_calls,
        )
        all_ids, all_scores = ids.tolist(), scores.tolist()
        return [
            RoutedRecommendation(all_ids[row][: q.k], all_scores[row][: q.k], stats)
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
