"""serve one shard of a model's catalog (its items' rows, lookups and local top-k) to a router"""

from __future__ import annotations

import argparse
import asyncio
import gc
from concurrent.futures import ThreadPoolExecutor

import structlog

from etude import defaults

from ..inference.models import MODEL_NAMES
from ..inference.options import DEFAULT_EMBEDDING_POLICY, EMBEDDING_POLICIES, PRECISION_NAMES
from ..inference.shard_mapping import DEFAULT_STRATEGY, STRATEGIES

DEFAULT_PORT = defaults.SHARD_PORT
# The popularity a "popular" layout replicates by default: the synthetic workload's defaults.
DEFAULT_HOT_ITEMS = 1024
DEFAULT_POPULARITY_ALPHA_CLICKS = 2.0

_log = structlog.get_logger()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The shard's own flags (each also read from ETUDE_<FLAG> when absent)."""
    parser.add_argument("--model", choices=MODEL_NAMES, required=True, help="model whose item rows to hold")
    parser.add_argument("--catalog-size", type=int, required=True, help="items of the whole catalog (1..C)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (the router's --seed)")
    parser.add_argument(
        "--shard",
        required=True,
        help="I/N: this is shard I (0-based) of N; 'ordinal/N' takes I from the hostname's last "
        "'-' suffix (a StatefulSet pod's ordinal)",
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY, help="how items map to shards"
    )
    parser.add_argument(
        "--embedding-dim", type=int, default=0, help="item embedding width (0 = the policy's)"
    )
    parser.add_argument("--embedding-policy", choices=EMBEDDING_POLICIES, default=DEFAULT_EMBEDDING_POLICY)
    parser.add_argument("--precision", choices=PRECISION_NAMES, default="fp32", help="scoring precision")
    parser.add_argument(
        "--hot-items",
        type=int,
        default=DEFAULT_HOT_ITEMS,
        help="strategy popular: the most clicked items, replicated on every shard",
    )
    parser.add_argument(
        "--popularity-alpha-clicks",
        type=float,
        default=DEFAULT_POPULARITY_ALPHA_CLICKS,
        help="strategy popular: the synthetic workload's click exponent that decides the hot items",
    )
    parser.add_argument(
        "--popularity-seed", type=int, default=0, help="strategy popular: the synthetic workload's seed"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = the cores but one)")


async def serve(args: argparse.Namespace) -> None:
    """Generates the shard's rows and serves them until SIGTERM/SIGINT."""
    import numpy as np
    import torch

    from etude.serving import ServiceHost, run_until_signalled, service_full_name
    from etude.v1 import shard_pb2, shard_pb2_grpc

    from ..inference.executors import threads_per_executor
    from ..inference.memory import memory_before_tables, own_memory
    from ..inference.precision import PrecisionUnsupported
    from ..inference.shard_mapping import InvalidShardMap, ShardMap, hot_items_of_workload, parse_shard
    from ..inference.shardable import ModelNotShardable
    from .catalog import ShardCatalog, ShardConfig
    from .server import ShardServicer

    threads = threads_per_executor(1, args.threads)
    torch.set_num_threads(threads)
    # Before the rows: what the process costs whatever the catalog.
    startup_memory = memory_before_tables(args.model)
    try:
        shard_index, shard_count = parse_shard(_with_ordinal(args.shard))
        hot = np.zeros(0, np.int64)
        if args.strategy == "popular":
            hot = hot_items_of_workload(
                args.catalog_size,
                min(args.hot_items, args.catalog_size),
                alpha_clicks=args.popularity_alpha_clicks,
                seed=args.popularity_seed,
            )
        config = ShardConfig(
            model=args.model,
            catalog_size=args.catalog_size,
            shard_index=shard_index,
            shard_map=ShardMap(args.strategy, shard_count, args.catalog_size, hot),
            seed=args.seed,
            embedding_dim=args.embedding_dim,
            embedding_policy=args.embedding_policy,
            precision=args.precision,
        )
        _log.info("building_shard", model=args.model, catalog_size=args.catalog_size, shard=args.shard)
        catalog = await asyncio.to_thread(ShardCatalog, config)
        built_memory = own_memory()
    except (InvalidShardMap, ModelNotShardable, PrecisionUnsupported, ValueError) as error:
        _log.error("shard_refused", reason=str(error))
        raise SystemExit(f"etude serve shard: {error}") from None
    _log.info(
        "shard_built",
        items_owned=catalog.items_owned,
        rows_held=catalog.rows_held,
        table_mib=round(catalog.table_bytes / 2**20, 1),
    )

    def initialise() -> None:
        torch.set_num_threads(threads)

    model_thread = ThreadPoolExecutor(1, thread_name_prefix="etude-shard", initializer=initialise)
    servicer = ShardServicer(catalog, model_thread, startup_memory, built_memory)
    host = ServiceHost(
        service_names=[service_full_name(shard_pb2, "ShardService")],
        register=lambda server: shard_pb2_grpc.add_ShardServiceServicer_to_server(servicer, server),
        host=args.host,
        port=args.port,
    )
    gc.freeze()
    try:
        await run_until_signalled(host, grace_s=args.grace_s, port_file=args.port_file)
    finally:
        model_thread.shutdown(wait=True)


def _with_ordinal(shard: str) -> str:
    """'ordinal/N' -> 'I/N' with I the hostname's suffix (etude-shard-3 -> 3); else unchanged."""
    import socket

    index, _, count = shard.partition("/")
    if index != "ordinal":
        return shard
    return f"{socket.gethostname().rpartition('-')[2]}/{count}"
