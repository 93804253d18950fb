"""The core of a catalog shard, without gRPC: the rows of its items (generated from the seed as
an unsharded server's table holds them), sparse lookups, and the exact top-k over the items it
owns with the shared scorer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..inference.memory import tensor_bytes
from ..inference.models import build_model
from ..inference.models.base import SessionEncoder, resolve_embedding_dim
from ..inference.models.item_rows import item_range_rows, item_rows
from ..inference.options import DEFAULT_EMBEDDING_POLICY
from ..inference.precision import PRECISIONS, require_supported
from ..inference.scoring import DEFAULT_MAX_SCORE_ELEMENTS, CatalogScorer
from ..inference.shard_mapping import ShardMap
from ..inference.shardable import require_shardable

# Most ids one Lookup may ask for, and most sessions one Score may carry (shard.proto).
MAX_LOOKUP_ITEMS = 65_536
MAX_SCORE_SESSIONS = 4_096
MAX_K = 10_000


class ShardRequestError(ValueError):
    """A Lookup or Score the shard cannot answer; `field` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ShardConfig:
    model: str
    catalog_size: int
    shard_index: int
    shard_map: ShardMap
    seed: int = 0
    embedding_dim: int = 0
    embedding_policy: str = DEFAULT_EMBEDDING_POLICY
    precision: str = "fp32"
    max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS
    model_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OwnedItems:
    """The ids a shard owns (scores), ascending: the bounds first..stop-1 of a range layout,
    or the ids a hashed layout lists (`listed`, 8 bytes per owned item)."""

    first: int
    stop: int
    listed: np.ndarray | None = None

    @classmethod
    def of(cls, shard_map: ShardMap, shard_index: int) -> OwnedItems:
        """What shard `shard_index` of `shard_map` owns."""
        if shard_map.strategy == "range":
            return cls(shard_map.range_first(shard_index), shard_map.range_first(shard_index + 1))
        listed = shard_map.owned_ids(shard_index)
        return cls(0, 0, listed)

    @property
    def size(self) -> int:
        return self.stop - self.first if self.listed is None else int(self.listed.size)

    def ids(self) -> np.ndarray:
        return np.arange(self.first, self.stop, dtype=np.int64) if self.listed is None else self.listed

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position of each of `ids` among the owned ids, whether this shard owns it at all)."""
        if self.listed is None:
            return ids - self.first, (ids >= self.first) & (ids < self.stop)
        return _positions(self.listed, ids)

    def ids_at(self, positions: torch.Tensor) -> torch.Tensor:
        """The owned ids at `positions` (int64, any shape)."""
        if self.listed is None:
            return positions + self.first
        return torch.from_numpy(self.listed)[positions]


class ShardCatalog:
    """Rows [0; owned items; replicated hot items not owned] and the scorer over the owned ones."""

    def __init__(self, config: ShardConfig) -> None:
        require_shardable(config.model)
        require_supported(config.precision, "cpu")
        shard_map = config.shard_map
        if shard_map.catalog_size != config.catalog_size:
            raise ValueError(
                f"shard map covers {shard_map.catalog_size} items, the catalog {config.catalog_size}"
            )
        self.config = config
        self.embedding_dim = resolve_embedding_dim(
            config.catalog_size, config.embedding_dim, config.embedding_policy
        )
        # Only for the item rows' distribution: the table stays on the meta device.
        encoder: SessionEncoder = build_model(
            config.model, config.catalog_size, self.embedding_dim, seed=config.seed, item_table=False,
            **config.model_options,
        )  # fmt: skip
        self.item_init = encoder.item_init()
        owned = OwnedItems.of(shard_map, config.shard_index)
        replicas = shard_map.hot_item_ids[shard_map.owner(shard_map.hot_item_ids) != config.shard_index]
        if owned.size == 0:
            raise ValueError(
                f"shard {config.shard_index}/{shard_map.shard_count} owns none of the "
                f"{config.catalog_size} items "
                f"(strategy {shard_map.strategy}): use fewer shards or the range strategy"
            )
        self._owned = owned
        self.items_owned = owned.size
        self._replica_ids = replicas
        dim, seed = self.embedding_dim, config.seed
        # Rows are generated straight into their place in the table, one seeded block at a time:
        # the build's peak is the table plus one block, never a second copy of the rows.
        self._table = torch.empty(1 + owned.size + replicas.size, dim)
        self._table[0].zero_()
        owned_rows = self._table[1 : 1 + owned.size]
        if owned.listed is None:
            item_range_rows(self.item_init, seed, dim, owned.first, owned.stop, out=owned_rows)
        else:
            item_rows(self.item_init, seed, dim, owned.listed, out=owned_rows)
        item_rows(self.item_init, seed, dim, replicas, out=self._table[1 + owned.size :])
        self.rows_held = owned.size + int(replicas.size)
        # The owned rows alone are scored: a [1 + owned] view, row 0 the padding the scorer skips.
        self._scorer = CatalogScorer(
            self._table[: 1 + owned.size],
            compute_dtype=PRECISIONS[config.precision],
            max_score_elements=config.max_score_elements,
            rescore_table=self._table[: 1 + owned.size],
        )

    @property
    def owned_ids(self) -> np.ndarray:
        """Ascending ids this shard owns (a range's are listed on demand: it keeps two bounds)."""
        return self._owned.ids()

    @property
    def table_bytes(self) -> int:
        """Bytes of the fp32 rows held."""
        return self._table.numel() * self._table.element_size()

    @property
    def allocated_table_bytes(self) -> int:
        """Bytes of every copy of the rows: the fp32 table and the scorer's own (reduced precision)."""
        scorer_tensors = [value for value in vars(self._scorer).values() if isinstance(value, torch.Tensor)]
        return tensor_bytes([self._table, *scorer_tensors])

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        """fp32 rows [len(item_ids), d] of held items, in the order asked; raises
        ShardRequestError naming the first id not held here."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if ids.size > MAX_LOOKUP_ITEMS:
            raise ShardRequestError("item_ids", f"item_ids has {ids.size} ids, more than {MAX_LOOKUP_ITEMS}")
        # Owned ids and replicas are each ascending and disjoint: an id's row is its position in
        # one of them (no catalog-sized lookup index beside the ids the shard keeps anyway).
        rows, found = self._owned.positions(ids)
        replica_rows, replica_found = _positions(self._replica_ids, ids)
        rows = np.where(found, rows + 1, replica_rows + 1 + self.items_owned)
        found |= replica_found
        if not found.all():
            first = int(ids[int(np.argmin(found))])
            raise ShardRequestError(
                "item_ids",
                f"item {first} is not held by shard {self.config.shard_index}/"
                f"{self.config.shard_map.shard_count} (strategy {self.config.shard_map.strategy}, "
                f"catalog 1..{self.config.catalog_size})",
            )
        return self._table.index_select(0, torch.from_numpy(rows)).numpy()

    def score(self, session_repr: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(global ids int64 [B, k], scores fp32 [B, k]), each row best first, over the owned items."""
        if session_repr.ndim != 2 or session_repr.shape[1] != self.embedding_dim:
            raise ShardRequestError(
                "session_representations",
                f"session_representations must be sessions x {self.embedding_dim} fp32, "
                f"got shape {session_repr.shape}",
            )
        if not 1 <= session_repr.shape[0] <= MAX_SCORE_SESSIONS:
            raise ShardRequestError(
                "sessions", f"sessions must be in 1..{MAX_SCORE_SESSIONS}, got {session_repr.shape[0]}"
            )
        if not 1 <= k <= min(MAX_K, self.items_owned):
            raise ShardRequestError(
                "k", f"k must be in 1..{min(MAX_K, self.items_owned)} (items owned), got {k}"
            )
        with torch.inference_mode():
            scores, rows = self._scorer.top_k(torch.from_numpy(session_repr), k)
            ids = self._owned.ids_at(rows - 1)
        return ids.numpy(), scores.numpy()


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each of `ids` in the ascending `sorted_ids`, whether it is there at all)."""
    if sorted_ids.size == 0:
        return np.zeros(ids.size, np.int64), np.zeros(ids.size, bool)
    positions = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return positions, sorted_ids[positions] == ids
