"""The ShardService servicer: adapts a ShardCatalog to gRPC. Lookups (a gather of a few rows)
run on the loop; scoring runs in the shard's one model thread. Errors map to status codes in
`_status_for`."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import structlog

from etude.v1 import shard_pb2, shard_pb2_grpc

from ..inference.memory import MemoryReading, own_memory, server_memory
from .catalog import ShardCatalog, ShardRequestError

_log = structlog.get_logger()


def _status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The one place where the shard core's exceptions become gRPC status codes."""
    if isinstance(error, ShardRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"{error.field}: {error}"
    _log.exception("shard_call_failed", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"shard failed: {type(error).__name__}: {error}"


class ShardServicer(shard_pb2_grpc.ShardServiceServicer):
    """Lookup, Score and GetShardInfo over one ShardCatalog; `model_thread` runs Score."""

    def __init__(
        self,
        catalog: ShardCatalog,
        model_thread: ThreadPoolExecutor,
        startup_memory: MemoryReading | None = None,
        built_memory: MemoryReading | None = None,
    ) -> None:
        self._catalog = catalog
        self._model_thread = model_thread
        # The process's memory before the rows were built and right after (None: as it is now).
        self._startup_memory = startup_memory or own_memory()
        self._built_memory = built_memory or own_memory()

    async def Lookup(
        self, request: shard_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> shard_pb2.LookupResponse:
        try:
            rows = self._catalog.lookup(np.asarray(request.item_ids, dtype=np.int64))
        except Exception as error:
            await context.abort(*_status_for(error))
        return shard_pb2.LookupResponse(
            rows=rows.astype("<f4", copy=False).tobytes(), embedding_dim=self._catalog.embedding_dim
        )

    async def Score(
        self, request: shard_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> shard_pb2.ScoreResponse:
        try:
            dim = self._catalog.embedding_dim
            if request.sessions < 1 or len(request.session_representations) != request.sessions * dim * 4:
                raise ShardRequestError(
                    "session_representations",
                    f"session_representations must hold sessions ({request.sessions}, >= 1) x "
                    f"embedding_dim ({dim}) x 4 bytes, got {len(request.session_representations)}",
                )
            queries = np.frombuffer(request.session_representations, dtype="<f4").reshape(
                request.sessions, dim
            )
            if not np.isfinite(queries).all():
                raise ShardRequestError("session_representations", "session_representations must be finite")
            started_ns = time.monotonic_ns()
            loop = asyncio.get_running_loop()
            # frombuffer is read-only; torch wants a writable array.
            ids, scores = await loop.run_in_executor(
                self._model_thread, self._catalog.score, queries.copy(), request.k
            )
            compute_us = (time.monotonic_ns() - started_ns) // 1000
        except Exception as error:
            await context.abort(*_status_for(error))
        return shard_pb2.ScoreResponse(
            item_ids=ids.astype("<i8", copy=False).tobytes(),
            scores=scores.astype("<f4", copy=False).tobytes(),
            k=request.k,
            compute_us=compute_us,
        )

    async def GetShardInfo(
        self, request: shard_pb2.GetShardInfoRequest, context: grpc.aio.ServicerContext
    ) -> shard_pb2.ShardInfo:
        catalog, config = self._catalog, self._catalog.config
        return shard_pb2.ShardInfo(
            model=config.model,
            catalog_size=config.catalog_size,
            embedding_dim=catalog.embedding_dim,
            seed=config.seed,
            shard_index=config.shard_index,
            shard_count=config.shard_map.shard_count,
            strategy=config.shard_map.strategy,
            items_owned=catalog.items_owned,
            rows_held=catalog.rows_held,
            hot_item_ids=config.shard_map.hot_item_ids.tolist(),
            table_bytes=catalog.table_bytes,
            item_init=catalog.item_init.describe(),
            precision=config.precision,
            memory=server_memory(
                f"shard {config.shard_index}/{config.shard_map.shard_count}",
                self._startup_memory,
                self._built_memory,
                catalog.allocated_table_bytes,
                catalog.rows_held,
            ),
        )
