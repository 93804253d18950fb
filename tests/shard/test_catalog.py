"""Shard layouts and the shard core in-process: every item owned once, lookups answer the rows
an unsharded server holds, the shards' merged top-k is the unsharded top-k, and models with
heads of their own are refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from etude.services.inference.models import build_model
from etude.services.inference.scoring import CatalogScorer
from etude.services.inference.shard_mapping import (
    InvalidShardMap,
    ShardMap,
    hot_items_of_workload,
    parse_shard,
)
from etude.services.inference.shardable import ModelNotShardable, require_shardable
from etude.services.shard.catalog import ShardCatalog, ShardConfig, ShardRequestError

CATALOG_SIZE = 20_011


@pytest.mark.parametrize("strategy", ["range", "hash", "popular"])
def test_every_item_is_owned_by_exactly_one_shard(strategy: str) -> None:
    hot = (
        hot_items_of_workload(CATALOG_SIZE, 100, alpha_clicks=2.0, seed=0) if strategy == "popular" else None
    )
    shard_map = ShardMap(strategy, 3, CATALOG_SIZE, *([hot] if hot is not None else []))
    owned = [shard_map.owned_ids(index) for index in range(3)]
    assert np.array_equal(np.sort(np.concatenate(owned)), np.arange(1, CATALOG_SIZE + 1))
    for index, ids in enumerate(owned):
        assert (shard_map.owner(ids) == index).all()
    assert max(map(len, owned)) - min(map(len, owned)) <= (1 if strategy == "range" else CATALOG_SIZE // 20)


def test_popular_layout_looks_a_session_of_hot_items_up_from_one_shard() -> None:
    hot = hot_items_of_workload(CATALOG_SIZE, 200, alpha_clicks=2.0, seed=0)
    shard_map = ShardMap("popular", 4, CATALOG_SIZE, hot)
    assert len(shard_map.route_lookups(hot[:40], preferred_shard=2)) == 1
    cold = np.setdiff1d(np.arange(1, 200), hot)[:1]
    mixed = np.sort(np.concatenate([hot[:40], cold]))
    routes = shard_map.route_lookups(mixed)
    assert list(routes) == [int(shard_map.owner(cold)[0])]
    hashed = ShardMap("hash", 4, CATALOG_SIZE)
    assert len(hashed.route_lookups(hot[:40])) == 4


def test_bad_layouts_are_refused_naming_the_flag() -> None:
    with pytest.raises(InvalidShardMap, match="--shard I/N needs"):
        parse_shard("2/2")
    with pytest.raises(InvalidShardMap, match="strategy must be one of"):
        ShardMap("round-robin", 2, 10)
    with pytest.raises(InvalidShardMap, match=r"shard count must be in 1..catalog_size \(3\)"):
        ShardMap("range", 4, 3)


def _shard(model: str, index: int, shard_map: ShardMap, dim: int = 12) -> ShardCatalog:
    config = ShardConfig(model, CATALOG_SIZE, index, shard_map, seed=5, embedding_dim=dim)
    return ShardCatalog(config)


@pytest.mark.parametrize("strategy", ["range", "hash", "popular"])
def test_shards_hold_the_unsharded_rows_and_their_merged_top_k_is_the_unsharded_top_k(strategy: str) -> None:
    full = build_model("narm", CATALOG_SIZE, 12, seed=5).item_embeddings().detach()
    hot = hot_items_of_workload(CATALOG_SIZE, 300, alpha_clicks=2.0, seed=0)
    shard_map = ShardMap(strategy, 3, CATALOG_SIZE, *([hot] if strategy == "popular" else []))
    shards = [_shard("narm", index, shard_map) for index in range(3)]
    for shard in shards:
        some = shard.owned_ids[::97]
        np.testing.assert_array_equal(shard.lookup(some), full[torch.from_numpy(some)].numpy())
        # In any order, repeated, owned rows mixed with the replicated hot rows (popular).
        held = shard_map.hot_item_ids if strategy == "popular" else shard.owned_ids[::389]
        mixed = np.concatenate([held[::-1], some[:5], held[:3]])
        np.testing.assert_array_equal(shard.lookup(mixed), full[torch.from_numpy(mixed)].numpy())
    queries = torch.randn(4, 12, generator=torch.Generator().manual_seed(1))
    expected_scores, expected_ids = CatalogScorer(full).top_k(queries, 21)
    parts = [shard.score(queries.numpy(), 21) for shard in shards]
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :21]
    np.testing.assert_allclose(
        np.take_along_axis(scores, best, 1), expected_scores.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(np.take_along_axis(ids, best, 1), expected_ids.numpy())


def test_a_lookup_of_an_item_held_elsewhere_names_it() -> None:
    shard = _shard("gru4rec", 0, ShardMap("range", 2, CATALOG_SIZE))
    with pytest.raises(ShardRequestError, match=f"item {CATALOG_SIZE} is not held by shard 0/2"):
        shard.lookup(np.array([1, CATALOG_SIZE]))
    with pytest.raises(ShardRequestError, match=r"k must be in 1..\d+"):
        shard.score(np.zeros((1, 12), np.float32), 0)


@pytest.mark.parametrize(
    ("model", "reason"), [("core", "core_scorer"), ("repeatnet", "repeatnet_scorer"), ("noop", "")]
)
def test_models_with_heads_of_their_own_are_not_sharded(model: str, reason: str) -> None:
    with pytest.raises(ModelNotShardable, match=reason or "computes nothing"):
        require_shardable(model)
