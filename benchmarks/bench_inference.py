"""Inference cost on this machine: median ms per batch, encoder alone and encoder + scoring.

For each model, catalog size C (d from the fourth-root policy), batch size B and runtime
(eager, jit), prints the median over repeated runs of: the encoder; the encoder plus the exact
top-21 over the catalog; and the whole core path (`Recommender.recommend_batch`: padding into
one tensor, encoder, scoring, conversion to lists). Sessions are random, lengths 1..50.

    .venv/bin/python benchmarks/bench_inference.py [--models noop gru4rec] [--catalog-sizes ...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import numpy as np
import structlog
import torch
from etude.services.inference.models.base import MAX_SESSION_LENGTH
from etude.services.inference.recommender import Recommender, RecommenderConfig, SessionQuery


def median_ms(run: Callable[[], object], min_runs: int, budget_s: float) -> float:
    """Median wall time of `run` over at least `min_runs` runs and about `budget_s` seconds."""
    run()  # one untimed run: caches, allocator
    times_ms: list[float] = []
    started = time.perf_counter()
    while len(times_ms) < min_runs or time.perf_counter() - started < budget_s:
        begin = time.perf_counter_ns()
        run()
        times_ms.append((time.perf_counter_ns() - begin) / 1e6)
        if len(times_ms) >= 200:
            break
    return statistics.median(times_ms)


def random_queries(recommender: Recommender, batch_size: int, rng: np.random.Generator) -> list[SessionQuery]:
    catalog_size = recommender.config.catalog_size
    return [
        SessionQuery(rng.integers(1, catalog_size + 1, size=int(length), dtype=np.int64), 21)
        for length in rng.integers(1, MAX_SESSION_LENGTH + 1, size=batch_size)
    ]


def padded(queries: list[SessionQuery]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(q.item_ids) for q in queries])
    seq = torch.zeros(len(queries), MAX_SESSION_LENGTH, dtype=torch.int64)
    for row, query in enumerate(queries):
        seq[row, : len(query.item_ids)] = torch.from_numpy(query.item_ids)
    return seq, lengths


def measure(
    recommender: Recommender,
    batch_size: int,
    rng: np.random.Generator,
    min_runs: int,
    budget_s: float,
) -> tuple[float, float, float]:
    """Median ms of: the encoder, encoder + top-21 scoring, the whole core path."""
    queries = random_queries(recommender, batch_size, rng)
    seq, lengths = padded(queries)
    encode, scorer = recommender.served_encoder, recommender.scorer
    with torch.inference_mode():
        encoder_ms = median_ms(lambda: encode(seq, lengths), min_runs, budget_s)
        scored_ms = median_ms(lambda: scorer.top_k(encode(seq, lengths), 21), min_runs, budget_s)
    core_ms = median_ms(lambda: recommender.recommend_batch(queries), min_runs, budget_s)
    return encoder_ms, scored_ms, core_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["noop", "gru4rec"])
    parser.add_argument("--catalog-sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32, 256])
    parser.add_argument("--runtimes", nargs="+", default=["eager", "jit"])
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=0.4, help="time per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    # Keep the table readable: the warm-up's info lines go.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; median ms per batch, k = 21")
    header = (
        f"{'model':<8} {'C':>9} {'d':>3} {'runtime':<7} {'B':>4} "
        f"{'encoder':>9} {'enc+score':>10} {'core path':>10} {'ms/request':>11}"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for model in args.models:
        for catalog_size in args.catalog_sizes:
            for runtime in args.runtimes:
                recommender = Recommender(
                    RecommenderConfig(model, catalog_size, runtime=runtime, warmup=True)
                )
                for batch_size in args.batch_sizes:
                    encoder_ms, scored_ms, core_ms = measure(
                        recommender, batch_size, rng, args.min_runs, args.budget_s
                    )
                    print(
                        f"{model:<8} {catalog_size:>9,} {recommender.embedding_dim:>3} "
                        f"{runtime:<7} {batch_size:>4} {encoder_ms:>9.3f} {scored_ms:>10.3f} "
                        f"{core_ms:>10.3f} {core_ms / batch_size:>11.4f}",
                        flush=True,
                    )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
