"""Candidate lists for a re-ranking load: what a retrieval stage would hand the model, drawn
without repeats from the workload's item popularity, the session's true next click among them.

No gRPC and no models: the generator asks `draw(next_item)` once per request.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import numpy as np

from etude.v1 import loadgen_pb2

from .spec import InvalidLoadSpec

# Rounds of popularity draws before the rest of a list is filled uniformly: a heavy head repeats
# the same items (at 1M items and alpha_clicks 1.8, 1,000 draws hold ~230 distinct ones), so a
# list close to the catalog's size could take a coupon collector's time.
MAX_POPULARITY_ROUNDS = 4
# Draws per missing candidate in the first round, doubled each round.
OVERDRAW = 4
# Keeps the candidates' random stream apart from the workload generator's streams of one seed.
CANDIDATE_STREAM = 0xCA4D


class ItemSampler(Protocol):
    """Item ids drawn i.i.d. from the workload's popularity (workload.generator.ItemPopularity)."""

    catalog_size: int

    def sample(self, rng: np.random.Generator, num_clicks: int) -> np.ndarray: ...


class CandidateSampler:
    """Draws `count` distinct item ids per request from `popularity`, deterministic for `seed`.

    With a `next_item` (the click the session really makes next) that item is one of them, at a
    random position: the list a retrieval stage with perfect recall would produce. The first
    occurrences in a stream of i.i.d. popularity draws are exactly a weighted sample without
    replacement; after a few rounds, whatever is still missing (a list that is a large part of
    the catalog) is filled uniformly from the items not drawn yet.
    """

    def __init__(self, popularity: ItemSampler, count: int, seed: int = 0) -> None:
        if not 1 <= count <= popularity.catalog_size:
            raise ValueError(f"count must be in 1..{popularity.catalog_size} (the catalog size), got {count}")
        self.count = count
        self._popularity = popularity
        self._rng = np.random.default_rng(seed)

    def draw(self, next_item: int | None = None) -> list[int]:
        """`count` distinct ids in 1..catalog_size, `next_item` among them when given."""
        chosen = np.array([next_item] if next_item is not None else [], dtype=np.int64)
        for round_index in range(MAX_POPULARITY_ROUNDS):
            missing = self.count - chosen.size
            if missing <= 0:
                break
            draws = self._popularity.sample(self._rng, (OVERDRAW << round_index) * missing + 8)
            chosen = _append_first_occurrences(chosen, draws, missing)
        if chosen.size < self.count:
            chosen = self._fill_uniformly(chosen)
        self._rng.shuffle(chosen)
        return chosen.tolist()  # type: ignore[no-any-return]

    def _fill_uniformly(self, chosen: np.ndarray) -> np.ndarray:
        catalog_size = self._popularity.catalog_size
        if 2 * self.count > catalog_size:
            # Half the catalog or more: one pass over it is cheaper than rejecting repeats.
            rest = np.setdiff1d(np.arange(1, catalog_size + 1), chosen, assume_unique=True)
            return np.concatenate([chosen, self._rng.choice(rest, self.count - chosen.size, replace=False)])
        while chosen.size < self.count:
            missing = self.count - chosen.size
            draws = self._rng.integers(1, catalog_size + 1, size=2 * missing + 8)
            chosen = _append_first_occurrences(chosen, draws, missing)
        return chosen


def _append_first_occurrences(chosen: np.ndarray, draws: np.ndarray, limit: int) -> np.ndarray:
    """`chosen` followed by up to `limit` of `draws` not in it, first occurrences in draw order."""
    fresh = draws[~np.isin(draws, chosen)]
    # First occurrences in draw order (np.unique alone would sort them by id).
    _, first = np.unique(fresh, return_index=True)
    return np.concatenate([chosen, fresh[np.sort(first)][:limit]])


async def candidate_sampler_for(spec: loadgen_pb2.LoadSpec) -> CandidateSampler | None:
    """The sampler a re-ranking LoadSpec asks for (None for a full-catalog load), over the same
    popularity table the workload's sessions are drawn from (the seed and statistics fix it,
    whether the sessions come from a WorkloadService or from this process)."""
    count = spec.profile.candidates_per_request
    if count == 0:
        return None
    try:
        from ..workload.generator import (  # type: ignore[import-not-found,unused-ignore]
            ItemPopularity,
            SyntheticWorkload,
        )
    except ImportError as error:
        raise InvalidLoadSpec(
            "profile.candidates_per_request",
            f"needs the workload generator's popularity table, not available here ({error})",
        ) from error
    workload = spec.workload

    def build() -> Any:
        return ItemPopularity.for_workload(SyntheticWorkload.from_proto(workload))

    try:
        # Off the event loop: a 10-million-item table takes a second or two.
        popularity = await asyncio.to_thread(build)
    except ValueError as error:
        field = getattr(error, "field", None)
        raise InvalidLoadSpec(f"workload.{field}" if field else "workload", str(error)) from error
    # Instances replaying other partitions of one workload draw other candidate lists.
    seed = np.random.SeedSequence([workload.seed, workload.session_partition, CANDIDATE_STREAM])
    return CandidateSampler(popularity, count, seed=int(seed.generate_state(1, np.uint64)[0]))
