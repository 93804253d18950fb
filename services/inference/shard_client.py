"""The router's side of the catalog shards: one channel per shard, sparse lookups and top-k
scoring fanned out concurrently (grpc.aio, on the serving loop), and the exact merge.

Holds O(shards + hot items) state: nothing grows with the catalog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
import structlog

from etude import security
from etude.serving import MAX_MESSAGE_BYTES
from etude.v1 import shard_pb2, shard_pb2_grpc

from .shard_mapping import ShardMap

_log = structlog.get_logger()

AnswerT = TypeVar("AnswerT")

# A shard that went away is retried at most this often, so that it serves again within about
# a second of coming back (gRPC's default backoff grows to 2 minutes).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
DEFAULT_SHARD_TIMEOUT_S = 10.0
# Codes that mean "the shard is not there (now)", as opposed to a shard that answered wrongly.
_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class ShardError(Exception):
    """A shard call that failed; names the shard."""

    def __init__(self, shard_index: int, shard_count: int, address: str, detail: str) -> None:
        super().__init__(f"catalog shard {shard_index}/{shard_count} at {address}: {detail}")
        self.shard_index = shard_index
        self.address = address


class ShardUnavailable(ShardError):
    """The shard could not be reached (down, restarting, or too slow)."""


class ShardFailed(ShardError):
    """The shard answered with an error (a bug or a mismatch between router and shard)."""


class ShardSetMismatch(ValueError):
    """The shards given do not form one catalog the router can serve; says what differs."""


@dataclass(frozen=True)
class FanOutStats:
    """One batch's traffic to the shards: wall time waiting on them, the slowest shard's
    compute, and the bytes sent and received (serialised messages)."""

    fanout_ns: int
    shard_compute_us: int
    wire_bytes: int
    lookup_calls: int


class ShardClient:
    """One shard's channel and stub, and the error mapping that names it."""

    def __init__(self, address: str, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.channel = security.open_channel(address, options=CHANNEL_OPTIONS)
        self.stub = shard_pb2_grpc.ShardServiceStub(self.channel)
        self.index = -1
        self.count = 0

    def _error(self, error: grpc.aio.AioRpcError) -> ShardError:
        kind = ShardUnavailable if error.code() in _UNREACHABLE else ShardFailed
        return kind(self.index, self.count, self.address, f"{error.code().name}: {error.details()}")

    async def info(self) -> shard_pb2.ShardInfo:
        try:
            return await self.stub.GetShardInfo(shard_pb2.GetShardInfoRequest(), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            raise self._error(error) from None

    async def lookup(self, request: shard_pb2.LookupRequest) -> shard_pb2.LookupResponse:
        try:
            return await self.stub.Lookup(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            raise self._error(error) from None

    async def score(self, request: shard_pb2.ScoreRequest) -> shard_pb2.ScoreResponse:
        try:
            return await self.stub.Score(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            raise self._error(error) from None


class ShardedCatalog:
    """The catalog as the router sees it: N shards that together hold items 1..C once each."""

    def __init__(self, addresses: Sequence[str], timeout_s: float = DEFAULT_SHARD_TIMEOUT_S) -> None:
        if not addresses:
            raise ShardSetMismatch("--catalog-shards needs at least one HOST:PORT")
        self._clients = [ShardClient(address, timeout_s) for address in addresses]
        self.infos: list[shard_pb2.ShardInfo] = []
        self.shard_map: ShardMap | None = None
        self._round_robin = 0

    @property
    def shard_count(self) -> int:
        return len(self._clients)

    @property
    def addresses(self) -> list[str]:
        return [client.address for client in self._clients]

    async def connect(self, wait_s: float) -> None:
        """Waits up to `wait_s` for every shard to answer, checks they form one catalog, and
        orders them by shard index; raises ShardSetMismatch or ShardUnavailable."""
        deadline = time.monotonic() + wait_s
        infos: list[shard_pb2.ShardInfo] = []
        for client in self._clients:
            while True:
                try:
                    infos.append(await client.info())
                    break
                except ShardUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        self._check(infos)
        order = sorted(range(len(infos)), key=lambda position: infos[position].shard_index)
        self._clients = [self._clients[position] for position in order]
        self.infos = [infos[position] for position in order]
        for client, info in zip(self._clients, self.infos, strict=True):
            client.index, client.count = info.shard_index, info.shard_count
        first = self.infos[0]
        self.shard_map = ShardMap(
            first.strategy, first.shard_count, first.catalog_size, np.asarray(first.hot_item_ids, np.int64)
        )
        _log.info(
            "catalog_shards_connected",
            shards=[
                f"{info.shard_index}/{info.shard_count}@{client.address}"
                for client, info in zip(self._clients, self.infos, strict=True)
            ],
            strategy=first.strategy,
            catalog_size=first.catalog_size,
        )

    def _check(self, infos: list[shard_pb2.ShardInfo]) -> None:
        first = infos[0]
        fields = (
            "model",
            "catalog_size",
            "embedding_dim",
            "seed",
            "shard_count",
            "strategy",
            "item_init",
            "precision",
        )
        for client, info in zip(self._clients, infos, strict=True):
            for name in fields:
                if getattr(info, name) != getattr(first, name):
                    raise ShardSetMismatch(
                        f"catalog shards disagree on {name}: {self._clients[0].address} has "
                        f"{getattr(first, name)!r}, {client.address} has {getattr(info, name)!r}"
                    )
            if list(info.hot_item_ids) != list(first.hot_item_ids):
                raise ShardSetMismatch(f"catalog shards disagree on their hot items ({client.address})")
        indices = sorted(info.shard_index for info in infos)
        if first.shard_count != len(infos) or indices != list(range(len(infos))):
            raise ShardSetMismatch(
                f"--catalog-shards must name shards 0..{first.shard_count - 1} of {first.shard_count} "
                f"once each, "
                f"got indices {indices}"
            )

    def check_serves(
        self, model: str, catalog_size: int, embedding_dim: int, seed: int, item_init: str
    ) -> None:
        """Raises ShardSetMismatch unless the shards hold the catalog the router encodes for."""
        first = self.infos[0]
        wanted = {
            "model": model,
            "catalog_size": catalog_size,
            "embedding_dim": embedding_dim,
            "seed": seed,
            "item_init": item_init,
        }
        for name, value in wanted.items():
            if getattr(first, name) != value:
                raise ShardSetMismatch(
                    f"the catalog shards hold {name} = {getattr(first, name)!r}, the router serves {value!r}"
                )

    async def current_infos(self) -> list[shard_pb2.ShardInfo]:
        """Every shard's ShardInfo as it answers now (its memory in particular), in shard order;
        raises ShardError naming a shard that does not answer."""
        return await _gather([client.info() for client in self._clients])

    async def lookup(self, item_ids: np.ndarray) -> tuple[np.ndarray, int, int]:
        """fp32 rows [len(item_ids), d] of unique ids, the bytes on the wire and the shards asked;
        asks each id's holder, every shard concurrently."""
        assert self.shard_map is not None
        self._round_robin = (self._round_robin + 1) % self.shard_count
        routes = self.shard_map.route_lookups(item_ids, preferred_shard=self._round_robin)
        requests = {shard: shard_pb2.LookupRequest(item_ids=ids.tolist()) for shard, ids in routes.items()}
        answers = await _gather([self._clients[shard].lookup(request) for shard, request in requests.items()])
        dim = self.infos[0].embedding_dim
        rows = np.empty((len(item_ids), dim), dtype=np.float32)
        wire_bytes = 0
        for (shard, request), answer in zip(requests.items(), answers, strict=True):
            # ids are ascending and unique: each route's ids land at their sorted positions.
            positions = np.searchsorted(item_ids, routes[shard])
            rows[positions] = np.frombuffer(answer.rows, dtype="<f4").reshape(-1, dim)
            wire_bytes += request.ByteSize() + answer.ByteSize()
        return rows, wire_bytes, len(requests)

    async def top_k(self, session_repr: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Exact top-k (scores fp32 [B, k], ids [B, k], best first) over the whole catalog, the
        slowest shard's compute in us, and the bytes on the wire."""
        batch = session_repr.shape[0]
        payload = np.ascontiguousarray(session_repr, dtype="<f4").tobytes()
        requests = [
            shard_pb2.ScoreRequest(
                session_representations=payload, sessions=batch, k=min(k, info.items_owned)
            )
            for info in self.infos
        ]
        answers = await _gather(
            [client.score(request) for client, request in zip(self._clients, requests, strict=True)]
        )
        scores = np.concatenate([np.frombuffer(a.scores, "<f4").reshape(batch, -1) for a in answers], axis=1)
        ids = np.concatenate([np.frombuffer(a.item_ids, "<i8").reshape(batch, -1) for a in answers], axis=1)
        # Each shard's top-k is exact over its disjoint part: the best k of their union is exact.
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        wire_bytes = sum(r.ByteSize() for r in requests) + sum(a.ByteSize() for a in answers)
        compute_us = max(a.compute_us for a in answers)
        return np.take_along_axis(scores, best, 1), np.take_along_axis(ids, best, 1), compute_us, wire_bytes

    async def close(self) -> None:
        await asyncio.gather(*(client.channel.close() for client in self._clients))


async def _gather(calls: list[Coroutine[Any, Any, AnswerT]]) -> list[AnswerT]:
    """Awaits every call; on a failure cancels the rest and raises the first ShardError."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
