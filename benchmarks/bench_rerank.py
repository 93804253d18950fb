"""Re-ranking C candidates: one packed request vs C one-candidate requests vs full-catalog scoring.

RecServe's comparison (IEEE TC 2024: one user packed with its candidates instead of replicated
per candidate) for a session-based model. For each catalog size and candidate count C, with one
random session and C candidates drawn uniformly, prints the median ms of:

- packed: one request carrying the C candidates (encoder once, C rows gathered and scored);
- replicated: the same work as C requests with one candidate each (the session replicated: C
  encoder rows, C one-row gathers), in the best case for it: all C in one batch;
- full: one request scoring the whole catalog (exact top-21), what re-ranking replaces;

and the ratios replicated / packed and full / packed. The three are timed in turn within each
round (medians over the rounds), so that a shared machine's drifting load hits them alike.
Two paths: `core` calls Recommender.recommend_batch in-process (the model's work alone); `grpc`
sends real Recommend calls to a server on port 0 through the dynamic batcher (C concurrent calls
for replicated), so per-call transport and serialisation count, as in RecServe's measurement.

    .venv/bin/python benchmarks/bench_rerank.py [--catalog-sizes 100000 1000000]
        [--candidates 10 100 500 1000] [--model gru4rec] [--precision fp32] [--paths core grpc]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
import numpy as np
import structlog
import torch
from etude.services.inference.batcher import DynamicBatcher
from etude.services.inference.recommender import Recommender, RecommenderConfig
from etude.services.inference.server import RecommenderServicer

from etude.serving import ServiceHost, service_full_name
from etude.v1 import recommender_pb2, recommender_pb2_grpc

K = 21
SESSION_LENGTH = 10


def interleaved_medians_ms(runs: Sequence[Callable[[], object]], rounds: int) -> list[float]:
    """Median ms of each of `runs`, timed in turn within every round, so that all of them see the
    same state of a shared machine (its load drifts over seconds)."""
    for run in runs:
        run()  # untimed: caches, allocator
    times_ms: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for index, run in enumerate(runs):
            begin = time.perf_counter_ns()
            run()
            times_ms[index].append((time.perf_counter_ns() - begin) / 1e6)
    return [statistics.median(times) for times in times_ms]


async def interleaved_medians_ms_async(
    runs: Sequence[Callable[[], Awaitable[object]]], rounds: int
) -> list[float]:
    for run in runs:
        await run()
    times_ms: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for index, run in enumerate(runs):
            begin = time.perf_counter_ns()
            await run()
            times_ms[index].append((time.perf_counter_ns() - begin) / 1e6)
    return [statistics.median(times) for times in times_ms]


def core_path(
    recommender: Recommender, session: list[int], candidates: list[int], rounds: int
) -> list[float]:
    packed = [recommender.validate(session, K, candidates)]
    replicated = [recommender.validate(session, K, [item]) for item in candidates]
    full = [recommender.validate(session, K)]
    return interleaved_medians_ms(
        [
            lambda: recommender.recommend_batch(packed),
            lambda: recommender.recommend_batch(replicated),
            lambda: recommender.recommend_batch(full),
        ],
        rounds,
    )


async def grpc_path(
    recommender: Recommender, session: list[int], candidates: list[int], rounds: int, threads: int
) -> list[float]:
    batcher = DynamicBatcher(
        recommender.recommend_batch,
        max_batch_size=max(1024, len(candidates)),
        # The model thread's own OpenMP setting (a new thread does not inherit the main one's).
        executor_initializer=lambda _: torch.set_num_threads(threads),
    )
    servicer = RecommenderServicer(recommender, batcher)
    host = ServiceHost(
        [service_full_name(recommender_pb2, "RecommenderService")],
        lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(servicer, server),
    )
    await batcher.start()
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)

            def request(candidate_ids: list[int]) -> recommender_pb2.RecommendRequest:
                return recommender_pb2.RecommendRequest(
                    session_id="s", item_ids=session, k=K, candidate_ids=candidate_ids
                )

            packed_request, full_request = request(candidates), request([])
            singles = [request([item]) for item in candidates]

            async def replicated() -> None:
                await asyncio.gather(*(stub.Recommend(single) for single in singles))

            return await interleaved_medians_ms_async(
                [lambda: stub.Recommend(packed_request), replicated, lambda: stub.Recommend(full_request)],
                rounds,
            )
    finally:
        await host.stop(0)
        await batcher.stop(drain=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog-sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--candidates", nargs="+", type=int, default=[10, 100, 500, 1000])
    parser.add_argument("--model", default="gru4rec")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--paths", nargs="+", choices=["core", "grpc"], default=["core", "grpc"])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (each times all three)")
    # One intra-op thread by default: on a shared 2-core machine a second spinning OpenMP thread
    # makes every product wait for a core (orders of magnitude of noise).
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"# {args.model} {args.precision}, torch {torch.__version__}, {torch.get_num_threads()} threads,"
        f" session of {SESSION_LENGTH} clicks, k = {K}; median ms of {args.rounds} interleaved rounds"
    )
    print("path  catalog    C  packed_ms  replicated_ms  full_ms  replicated/packed  full/packed")
    rng = np.random.default_rng(0)
    for catalog_size in args.catalog_sizes:
        recommender = Recommender(
            RecommenderConfig(args.model, catalog_size, precision=args.precision, warmup=False)
        )
        recommender.warm_up((1, 32))
        session = rng.integers(1, catalog_size + 1, size=SESSION_LENGTH).tolist()
        for count in args.candidates:
            candidates = rng.choice(catalog_size, size=count, replace=False) + 1
            for path in args.paths:
                if path == "core":
                    packed, replicated, full = core_path(
                        recommender, session, candidates.tolist(), args.rounds
                    )
                else:
                    packed, replicated, full = asyncio.run(
                        grpc_path(recommender, session, candidates.tolist(), args.rounds, args.threads)
                    )
                print(
                    f"{path:5} {catalog_size:>8,} {count:>4} {packed:>10.3f} {replicated:>14.3f} {full:>8.3f}"
                    f" {replicated / packed:>18.1f} {full / packed:>12.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
