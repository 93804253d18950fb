"""Which catalog shard owns (scores) and holds (can look up) each item: contiguous ranges,
hashing, or hashing plus a hot set replicated on every shard ("popular").

Everything here is O(shard_count + hot items): a router maps ids to shards without any
catalog-sized table.

Which layout: the capacity-driven scale-out study (Lui et al., 2020) found the overhead of
distributed inference set by how tables are mapped to servers and by how sparse the requests
are, most of it in the remote calls a request fans out to; its best configurations keep the
shards a request touches few. That favours `popular` for the lookups here (a session of hot
items is looked up from one shard, and hot items ride along on a call the batch makes anyway).
Scoring is an exact top-k over the whole catalog, so every batch reaches every shard whatever
the layout; range and hash differ only in where a cold item's lookup goes (hash spreads a
popularity skew in the ids, range keeps an id's owner computable from two numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STRATEGIES = ("range", "hash", "popular")
DEFAULT_STRATEGY = "range"
# Ids mapped per step when a shard lists the ids it owns: the hash's uint64 temporaries stay at
# a few MB (at 1 << 20 they added ~30 MB to a shard's build peak), and the steps cost nothing
# measurable (20M ids mapped in ~0.3 s either way).
_OWNER_STEP = 1 << 16


class InvalidShardMap(ValueError):
    """A shard layout that cannot work; `field` names the flag or field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; raises InvalidShardMap naming --shard."""
    index, _, count = text.partition("/")
    try:
        shard_index, shard_count = int(index), int(count)
    except ValueError:
        raise InvalidShardMap("--shard", f"--shard must be I/N (e.g. 0/4), got {text!r}") from None
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise InvalidShardMap("--shard", f"--shard I/N needs N >= 1 and I in 0..N-1, got {text!r}")
    return shard_index, shard_count


def _mix(ids: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64: neighbouring ids land on unrelated shards."""
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class ShardMap:
    """How items 1..catalog_size split over `shard_count` shards.

    range: shard i owns the contiguous ids first(i)..first(i+1)-1 (sizes differ by at most 1).
    hash: shard splitmix64(id) mod N owns id. popular: hash ownership, and the `hot_item_ids`
    (the most clicked items) held by every shard as well, so that a session of hot items is
    looked up from one shard.
    """

    strategy: str
    shard_count: int
    catalog_size: int
    hot_item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidShardMap(
                "--strategy", f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.catalog_size < 1:
            raise InvalidShardMap("--catalog-size", f"catalog_size must be >= 1, got {self.catalog_size}")
        if not 1 <= self.shard_count <= self.catalog_size:
            raise InvalidShardMap(
                "--shard",
                f"shard count must be in 1..catalog_size ({self.catalog_size}), got {self.shard_count}",
            )
        hot = np.asarray(self.hot_item_ids, dtype=np.int64)
        if self.strategy != "popular" and hot.size:
            raise InvalidShardMap(
                "--hot-items", f"hot items are replicated only by strategy 'popular', not {self.strategy!r}"
            )
        if hot.size and (hot[0] < 1 or hot[-1] > self.catalog_size or np.any(np.diff(hot) <= 0)):
            raise InvalidShardMap(
                "hot_item_ids", f"hot item ids must be unique, ascending, in 1..{self.catalog_size}"
            )
        object.__setattr__(self, "hot_item_ids", hot)

    def range_first(self, shard_index: int) -> int:
        """First id of shard `shard_index`'s range (range strategy); range_first(N) = C + 1."""
        return 1 + shard_index * self.catalog_size // self.shard_count

    def owner(self, item_ids: np.ndarray) -> np.ndarray:
        """The shard that owns (scores) each id, int64."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if self.strategy == "range":
            # first(i) <= id < first(i + 1), with first(i) = 1 + floor(i C / N).
            firsts = np.array([self.range_first(i) for i in range(1, self.shard_count)], dtype=np.int64)
            return np.searchsorted(firsts, ids, side="right").astype(np.int64)
        return (_mix(ids) % np.uint64(self.shard_count)).astype(np.int64)

    def owned_ids(self, shard_index: int) -> np.ndarray:
        """Ascending ids shard `shard_index` owns."""
        if self.strategy == "range":
            return np.arange(self.range_first(shard_index), self.range_first(shard_index + 1), dtype=np.int64)
        # Two passes (count, then fill) rather than pieces concatenated: the result is the only
        # shard-sized array alive, where a concatenation would briefly hold it twice.
        steps = range(1, self.catalog_size + 1, _OWNER_STEP)
        counts = [int(np.count_nonzero(self._owned_mask(first, shard_index)[1])) for first in steps]
        owned = np.empty(sum(counts), dtype=np.int64)
        offset = 0
        for first, count in zip(steps, counts, strict=True):
            ids, mine = self._owned_mask(first, shard_index)
            owned[offset : offset + count] = ids[mine]
            offset += count
        return owned

    def _owned_mask(self, first: int, shard_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids of one step from `first`, and which of them shard `shard_index` owns."""
        ids = np.arange(first, min(first + _OWNER_STEP, self.catalog_size + 1), dtype=np.int64)
        return ids, self.owner(ids) == shard_index

    def is_hot(self, item_ids: np.ndarray) -> np.ndarray:
        """Whether each id is in the replicated hot set (always False but for 'popular')."""
        hot = self.hot_item_ids
        if hot.size == 0:
            return np.zeros(len(item_ids), dtype=bool)
        positions = np.minimum(np.searchsorted(hot, item_ids), hot.size - 1)
        return hot[positions] == item_ids

    def route_lookups(self, item_ids: np.ndarray, preferred_shard: int = 0) -> dict[int, np.ndarray]:
        """Which shard to ask for each of `item_ids` (unique): its owner; a hot id goes to a shard
        asked anyway (the first cold id's owner), else to `preferred_shard`, so a batch touches
        as few shards as it can."""
        ids = np.asarray(item_ids, dtype=np.int64)
        target = self.owner(ids)
        hot = self.is_hot(ids)
        if hot.any():
            cold_owners = target[~hot]
            target[hot] = cold_owners[0] if cold_owners.size else preferred_shard
        return {int(shard): ids[target == shard] for shard in np.unique(target)}


def hot_items_of_workload(catalog_size: int, count: int, *, alpha_clicks: float, seed: int) -> np.ndarray:
    """The `count` most clicked items (ascending ids) of the synthetic workload with this
    catalog, click exponent and seed: what a popularity-aware layout replicates."""
    from ..workload.generator import SyntheticWorkload, item_click_counts

    if not 0 <= count <= catalog_size:
        raise InvalidShardMap("--hot-items", f"--hot-items must be in 0..{catalog_size}, got {count}")
    workload = SyntheticWorkload(
        catalog_size=catalog_size, alpha_length=2.0, alpha_clicks=alpha_clicks, seed=seed
    )
    counts = item_click_counts(workload)
    # The stable sort of -counts: ties go to the lower id, the same on every shard.
    top = np.argsort(-counts, kind="stable")[:count]
    return np.sort(top.astype(np.int64) + 1)
