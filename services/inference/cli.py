"""serve one session-based recommendation model (noop, gru4rec, ...) with dynamic batching"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from etude import defaults

from .batcher import (
    DEFAULT_INLINE_BELOW_US,
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
)
from .models import MODEL_NAMES
from .options import (
    DEFAULT_ACCURACY_ALPHA_CLICKS,
    DEFAULT_ACCURACY_ALPHA_LENGTH,
    DEFAULT_ACCURACY_SESSIONS,
    DEFAULT_EMBEDDING_POLICY,
    DEFAULT_K,
    DEFAULT_MAX_REQUEST_ITEMS,
    EMBEDDING_POLICIES,
    PRECISION_NAMES,
    RUNTIMES,
)

DEFAULT_PORT = defaults.INFERENCE_PORT

_log = structlog.get_logger()


class _ModelPathAction(argparse.Action):
    """Stores --model-path and lifts the requirement of --catalog-size (the file's table has C).

    argparse has no conditional requirement; its required-flags check runs after every action,
    so relaxing it here is seen by that check.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        parser._option_string_actions["--catalog-size"].required = False


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum` (argparse names the flag in its refusal)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The inference service's own flags (each also read from ETUDE_<FLAG> when absent)."""
    parser.add_argument(
        "--model", choices=MODEL_NAMES, default="noop", help="model to serve (ignored with --model-path)"
    )
    parser.add_argument(
        "--model-path",
        action=_ModelPathAction,
        default="",
        help="serve this TorchScript model file (a local path or gs://bucket/object) instead of --model; "
        "contract in services/inference/model_file.py, `etude export-model` writes one",
    )
    parser.add_argument(
        "--catalog-size",
        type=int,
        # ETUDE_MODEL_PATH is applied as a default, which no action sees: check it here.
        required=not os.environ.get("ETUDE_MODEL_PATH"),
        default=0,
        help="number of items; valid ids are 1..C (with --model-path: checked against the file, "
        "or taken from it when absent)",
    )
    parser.add_argument(
        "--embedding-dim", type=int, default=0, help="item embedding width (0 = the policy's)"
    )
    parser.add_argument("--embedding-policy", choices=EMBEDDING_POLICIES, default=DEFAULT_EMBEDDING_POLICY)
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1")
    parser.add_argument("--runtime", choices=RUNTIMES, default="eager")
    parser.add_argument(
        "--precision",
        choices=PRECISION_NAMES,
        default="fp32",
        help="scoring precision: bf16 on cuda and on CPUs with native bf16 (refused with the reason "
        "elsewhere), fp16 on cuda only; a reduced precision measures its recall@k against fp32 at "
        "start-up (accuracy mode, shown by GetModelInfo)",
    )
    parser.add_argument(
        "--accuracy-sessions",
        type=int,
        default=DEFAULT_ACCURACY_SESSIONS,
        help="workload sessions of the start-up accuracy check of a reduced precision (0 = no check)",
    )
    parser.add_argument("--accuracy-alpha-length", type=float, default=DEFAULT_ACCURACY_ALPHA_LENGTH)
    parser.add_argument("--accuracy-alpha-clicks", type=float, default=DEFAULT_ACCURACY_ALPHA_CLICKS)
    parser.add_argument("--accuracy-seed", type=int, default=0, help="seed of the accuracy check's sessions")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    parser.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=DEFAULT_MAX_BATCH_DELAY_MS,
        help="longest wait of the oldest request before its batch runs",
    )
    parser.add_argument(
        "--max-queue-size",
        type=int,
        default=DEFAULT_MAX_QUEUE_SIZE,
        help="waiting requests beyond which new ones get RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-queue-bytes",
        type=_at_least(1),
        default=defaults.MAX_QUEUE_BYTES,
        help="bytes the waiting requests may hold together (their serialised size) beyond which new "
        "ones get RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-stream-in-flight",
        type=_at_least(0),
        default=0,
        help="requests one RecommendStream may have read and not yet answered; at the bound the "
        "stream is not read further until an answer is written (0 = max queue size + executors x "
        "max batch size, so only a stream whose answers are not read meets it)",
    )
    parser.add_argument(
        "--max-request-items",
        type=int,
        default=DEFAULT_MAX_REQUEST_ITEMS,
        help="longest session accepted (the model reads the last 50 clicks)",
    )
    parser.add_argument("--default-k", type=int, default=DEFAULT_K, help="k when a request says 0")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads per executor (0 = the cores this process may use but one, left to "
        "the event loop, split between the --executors)",
    )
    parser.add_argument(
        "--executors",
        type=int,
        default=1,
        help="model executors: batches run on whichever is free (one thread each, a CUDA stream each)",
    )
    parser.add_argument(
        "--serving-processes",
        type=int,
        default=1,
        help="serving processes on the one port (SO_REUSEPORT), each with the same model; "
        "one grpc.aio process answers at most ~10,000 calls/s",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--inline-below-us",
        type=float,
        default=DEFAULT_INLINE_BELOW_US,
        help="run a batch on the event loop when batches of its size were measured faster than this "
        "(a hand-off to a model thread costs about as much); 0 = always in the model threads",
    )
    parser.add_argument(
        "--catalog-shards",
        default="",
        help="HOST:PORT,... of catalog shards (`etude serve shard`): serve as a router that looks the "
        "session's items up from them, runs the encoder and merges their top-k; it holds no item rows",
    )
    parser.add_argument(
        "--shard-timeout-s",
        type=float,
        default=10.0,
        help="router: longest wait for one call to a catalog shard",
    )
    parser.add_argument(
        "--shard-connect-wait-s",
        type=float,
        default=60.0,
        help="router: how long to wait at start for every catalog shard to answer",
    )
    parser.add_argument(
        "--max-queue-wait-ms",
        type=float,
        default=0.0,
        help="refuse a request whose expected wait for the model is longer (0 = bound by count "
        "and deadline only)",
    )


async def serve(args: argparse.Namespace) -> None:
    """Builds the model, warms it up, and serves until SIGTERM/SIGINT."""
    if args.serving_processes > 1:
        # Before anything imports torch or gRPC: this process only supervises its children.
        from .processes import child_flags, serve_processes

        own = argparse.ArgumentParser()
        add_arguments(own)
        flags = child_flags(own, args, skip=("serving_processes", "reuse_port"))
        flags += ["--grace-s", str(args.grace_s), "--log-format", args.log_format]
        flags += ["--log-level", args.log_level]
        raise SystemExit(
            await serve_processes(
                args.serving_processes,
                flags,
                host=args.host,
                port=args.port,
                port_file=args.port_file,
                grace_s=args.grace_s,
            )
        )
    import torch

    from etude.serving import ServiceHost, run_until_signalled, service_full_name
    from etude.v1 import recommender_pb2, recommender_pb2_grpc

    from . import metrics
    from .accuracy import AccuracySettings
    from .batcher import DynamicBatcher
    from .executors import executor_initializer, threads_per_executor
    from .memory import memory_before_tables
    from .model_file import ModelFileError
    from .precision import PrecisionUnsupported
    from .recommender import Recommender, RecommenderConfig
    from .router import RoutedRecommender
    from .server import RecommenderServicer, batch_span_attributes
    from .shard_client import ShardError, ShardSetMismatch
    from .shardable import ModelNotShardable

    if args.executors < 1:
        raise SystemExit(f"etude serve inference: --executors must be >= 1, got {args.executors}")
    threads = threads_per_executor(args.executors, args.threads)
    # Also here: the warm-up runs in this thread, and GetModelInfo reports this thread's count.
    torch.set_num_threads(threads)
    # Before the model's tables: what the process costs whatever the catalog.
    startup_memory = memory_before_tables(None if args.model_path else args.model)
    try:
        config = RecommenderConfig(
            model=args.model,
            catalog_size=args.catalog_size,
            embedding_dim=args.embedding_dim,
            embedding_policy=args.embedding_policy,
            device=args.device,
            runtime=args.runtime,
            precision=args.precision,
            max_request_items=args.max_request_items,
            default_k=args.default_k,
            seed=args.seed,
            model_path=args.model_path,
            accuracy=AccuracySettings(
                sessions=args.accuracy_sessions,
                alpha_length=args.accuracy_alpha_length,
                alpha_clicks=args.accuracy_alpha_clicks,
                seed=args.accuracy_seed,
            ),
        )
        _log.info(
            "building_model",
            model=config.model_path or config.model,
            catalog_size=config.catalog_size or "from the model file",
        )
        if args.catalog_shards:
            recommender: Recommender | RoutedRecommender = await _start_router(args, config)
        else:
            # Building and warming up can take seconds at large catalogs: keep the loop free.
            recommender = await asyncio.to_thread(Recommender, config)
    except (ModelFileError, PrecisionUnsupported, ShardSetMismatch, ModelNotShardable, ShardError) as error:
        # Exit before serving with the reason in the log's last lines (the controller shows them).
        event = "catalog_shards_refused"
        if isinstance(error, PrecisionUnsupported | ModelFileError):
            event = "precision_refused" if isinstance(error, PrecisionUnsupported) else "model_file_refused"
        _log.error(event, reason=str(error))
        raise SystemExit(f"etude serve inference: {error}") from None
    batcher = DynamicBatcher(
        recommender.recommend_batch,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        max_queue_size=args.max_queue_size,
        max_queue_bytes=args.max_queue_bytes,
        max_queue_wait_ms=args.max_queue_wait_ms,
        # A router's batch waits for the shards on the loop: it must never run on the loop itself.
        inline_below_us=0.0 if args.catalog_shards else args.inline_below_us,
        executors=args.executors,
        executor_initializer=executor_initializer(args.device, threads),
        batch_attributes=batch_span_attributes(recommender),
        on_batch=metrics.batch_ran,
    )
    metrics.watch_queue_depth(lambda: batcher.queue_size)
    servicer = RecommenderServicer(
        recommender,
        batcher,
        max_stream_in_flight=args.max_stream_in_flight,
        startup_memory=startup_memory,
    )
    host = ServiceHost(
        service_names=[service_full_name(recommender_pb2, "RecommenderService")],
        register=lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(
            servicer, server
        ),
        host=args.host,
        port=args.port,
        reuse_port=args.reuse_port,
    )
    # Everything built so far (torch's modules, the model) lives as long as the process: moved
    # out of the collector's reach, it is not rescanned by every full collection while serving.
    gc.freeze()
    await batcher.start()
    try:
        await run_until_signalled(host, grace_s=args.grace_s, port_file=args.port_file)
    finally:
        # After the server drained its calls, so in-flight requests still get answers.
        await batcher.stop(drain=True)
        if isinstance(recommender, RoutedRecommender):
            await recommender.catalog.close()


async def _start_router(args: argparse.Namespace, config: Any) -> Any:
    """Connects to the catalog shards, builds the encoder without its table, warms it up."""
    from .router import RoutedRecommender
    from .shard_client import ShardedCatalog

    addresses = [address.strip() for address in args.catalog_shards.split(",") if address.strip()]
    catalog = ShardedCatalog(addresses, timeout_s=args.shard_timeout_s)
    try:
        await catalog.connect(args.shard_connect_wait_s)
        router = await asyncio.to_thread(RoutedRecommender, config, catalog)
        router.bind(asyncio.get_running_loop())
        if config.warmup:
            await asyncio.to_thread(router.warm_up)
    except BaseException:
        await catalog.close()
        raise
    return router
