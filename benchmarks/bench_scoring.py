"""Exact top-21 scoring: Etude's chunked scorer against plain fp32 `q @ E.T` + `torch.topk`.

For each catalog size C (d from the fourth-root policy) and batch size B, in one run and with the
same torch threads, interleaving the methods repeat by repeat so that a noisy machine slows them
alike: plain fp32 (in row blocks where one B x C matrix would pass 2 GB), Etude's CatalogScorer
in fp32 and in the reduced precision (bf16 on a CPU with native bf16 or on CUDA), and FAISS
IndexFlatIP when faiss is importable (an outside anchor; not a dependency). Prints median ms per
batch and per request and each method's speed-up over plain fp32, then recall@21 of the reduced
precision against fp32 exact. On CUDA (when present) the same, plus the matrix product alone.

    .venv/bin/python benchmarks/bench_scoring.py                     # C = 1M and 10M, B = 1..256
    .venv/bin/python benchmarks/bench_scoring.py --chunk-sweep       # CPU chunk size, C = 1M
    .venv/bin/python benchmarks/bench_scoring.py --thread-sweep      # 1 vs 2 threads, idle / busy
    .venv/bin/python benchmarks/bench_scoring.py --model-recall      # accuracy mode per model, 1M
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from etude.services.inference.options import fourth_root_dim
from etude.services.inference.precision import PRECISION_OF_DTYPE, cpu_bf16_support
from etude.services.inference.scoring import CatalogScorer, chunked_top_k

K = 21
# Plain fp32 scores rows in blocks so that one block's B x C matrix stays under this (2 GB).
PLAIN_MAX_SCORE_ELEMENTS = 1 << 29

Method = Callable[[torch.Tensor], object]


def plain_fp32(items: torch.Tensor) -> Method:
    """`q @ E.T` + `torch.topk` over items 1..C (row blocks only when the matrix passes 2 GB)."""
    rows_per_block = max(1, PLAIN_MAX_SCORE_ELEMENTS // items.size(0))

    def run(queries: torch.Tensor) -> object:
        return [torch.topk(block @ items.T, K, dim=1) for block in queries.split(rows_per_block)]

    return run


def faiss_flat_ip(items: torch.Tensor, threads: int) -> Method | None:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        return None
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(items.size(1))
    index.add(items.numpy())
    return lambda queries: index.search(queries.numpy(), K)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_ms(
    methods: dict[str, Method], queries: torch.Tensor, repeats: int, device: torch.device
) -> dict[str, float]:
    """Median ms per batch of each method, the methods taking turns within every repeat."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for method in methods.values():  # untimed: allocator, caches, lazy kernels
        method(queries)
    synchronise(device)
    for _ in range(repeats):
        for name, method in methods.items():
            begin = time.perf_counter_ns()
            method(queries)
            synchronise(device)
            times[name].append((time.perf_counter_ns() - begin) / 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def recall(approx_ids: torch.Tensor, exact_ids: torch.Tensor) -> float:
    hits = (approx_ids.unsqueeze(2) == exact_ids.unsqueeze(1)).any(dim=1)
    return float(hits.float().mean())


def compare(
    catalog_size: int,
    batch_sizes: Sequence[int],
    repeats: int,
    device: torch.device,
    reduced: torch.dtype | None,
    threads: int,
) -> None:
    dim = fourth_root_dim(catalog_size)
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(catalog_size + 1, dim, generator=generator).to(device)
    items = table[1:]
    methods: dict[str, Method] = {"plain fp32": plain_fp32(items)}
    exact = CatalogScorer(table)
    methods["etude fp32"] = lambda queries: exact.top_k(queries, K)
    reduced_scorer = None
    reduced_name = ""
    if reduced is not None:
        # As the service builds it: candidates re-scored against the fp32 table the encoder keeps.
        reduced_scorer = CatalogScorer(table, compute_dtype=reduced, rescore_table=table)
        reduced_name = f"etude {PRECISION_OF_DTYPE[reduced]}"
        methods[reduced_name] = lambda queries: reduced_scorer.top_k(queries, K)
        if device.type == "cuda":
            # The floor a fused scorer aims at: the product alone, no top-k at all.
            reduced_items = items.to(reduced)
            methods["matmul only"] = lambda queries: queries.to(reduced) @ reduced_items.T
    if device.type == "cpu":
        faiss_method = faiss_flat_ip(items, threads)
        if faiss_method is not None:
            methods["faiss FlatIP"] = faiss_method
    print(f"\nC = {catalog_size:,}, d = {dim}, device {device}, {threads} torch threads, {repeats} repeats")
    print(f"{'B':>5}  " + "  ".join(f"{name:>26}" for name in methods))
    for batch_size in batch_sizes:
        queries = torch.randn(batch_size, dim, generator=generator).to(device)
        with torch.inference_mode():
            medians = interleaved_ms(methods, queries, repeats, device)
        plain = medians["plain fp32"]
        cells = [f"{ms:8.2f} ms {ms / batch_size:6.3f}/req x{plain / ms:4.2f}" for ms in medians.values()]
        print(f"{batch_size:>5}  " + "  ".join(f"{cell:>26}" for cell in cells), flush=True)
    if reduced_scorer is not None:
        queries = torch.randn(256, dim, generator=generator).to(device)
        with torch.inference_mode():
            _, exact_ids = exact.top_k(queries, K)
            _, approx_ids = reduced_scorer.top_k(queries, K)
            # Without an fp32 table to re-score against (a head whose table exists only reduced).
            _, table_only_ids = CatalogScorer(table, compute_dtype=reduced).top_k(queries, K)
        print(
            f"recall@{K} vs fp32 exact (256 random queries): {reduced_name} as served "
            f"{recall(approx_ids, exact_ids):.4f}; re-scored with the reduced table's own rows "
            f"{recall(table_only_ids, exact_ids):.4f}"
        )


def chunk_sweep(catalog_size: int, batch_sizes: Sequence[int], repeats: int, dtype: torch.dtype) -> None:
    """ms per request of chunked_top_k for chunk sizes 8k..256k (the CPU rule's measurement)."""
    dim = fourth_root_dim(catalog_size)
    generator = torch.Generator().manual_seed(0)
    items = torch.randn(catalog_size, dim, generator=generator).to(dtype)
    chunks = [1 << shift for shift in range(13, 19)]
    print(f"\nchunk sweep, C = {catalog_size:,}, d = {dim}, {dtype}, ms per request (median of {repeats})")
    print(f"{'B':>5}  " + "  ".join(f"{chunk:>8}" for chunk in chunks))
    for batch_size in batch_sizes:
        queries = torch.randn(batch_size, dim, generator=generator).to(dtype)
        methods: dict[str, Method] = {
            str(chunk): (lambda q, chunk=chunk: chunked_top_k(q, items, K, chunk))  # type: ignore[misc]
            for chunk in chunks
        }
        with torch.inference_mode():
            medians = interleaved_ms(methods, queries, repeats, torch.device("cpu"))
        print(
            f"{batch_size:>5}  " + "  ".join(f"{ms / batch_size:8.3f}" for ms in medians.values()), flush=True
        )


def _spin(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def thread_sweep(catalog_size: int, batch_sizes: Sequence[int], repeats: int, dtype: torch.dtype) -> None:
    """ms per request with 1 and 2 torch threads, idle and next to one busy process (a stand-in
    for the event loop plus a co-located load generator)."""
    dim = fourth_root_dim(catalog_size)
    table = torch.randn(catalog_size + 1, dim, generator=torch.Generator().manual_seed(0))
    scorer = CatalogScorer(table, compute_dtype=dtype)
    print(f"\nthread sweep, C = {catalog_size:,}, d = {dim}, {dtype}, ms per request (median of {repeats})")
    print(f"{'B':>5}  {'1 idle':>8}  {'2 idle':>8}  {'1 busy':>8}  {'2 busy':>8}")
    context = multiprocessing.get_context("spawn")
    for batch_size in batch_sizes:
        queries = torch.randn(batch_size, dim)
        row: list[float] = []
        for busy in (False, True):
            spinner = None
            if busy:
                spinner = context.Process(target=_spin, args=(time.monotonic() + 600,), daemon=True)
                spinner.start()
            try:
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    with torch.inference_mode():
                        ms = interleaved_ms(
                            {"s": lambda q: scorer.top_k(q, K)}, queries, repeats, torch.device("cpu")
                        )["s"]
                    row.append(ms / batch_size)
            finally:
                if spinner is not None:
                    spinner.terminate()
                    spinner.join()
        idle1, idle2, busy1, busy2 = row
        print(f"{batch_size:>5}  {idle1:8.3f}  {idle2:8.3f}  {busy1:8.3f}  {busy2:8.3f}", flush=True)


def model_recall(models: Sequence[str], catalog_size: int, dtype: torch.dtype) -> None:
    """Accuracy mode per model: the start-up check of `etude serve inference --precision`
    (recall@21 against fp32 exact scoring of the same random weights, 1,000 workload sessions)."""
    from etude.services.inference.recommender import Recommender, RecommenderConfig

    name = PRECISION_OF_DTYPE[dtype]
    print(f"\naccuracy mode, C = {catalog_size:,}, {name} vs fp32 exact, 1,000 workload sessions")
    for model in models:
        started = time.perf_counter()
        report = Recommender(RecommenderConfig(model, catalog_size, precision=name, warmup=False)).accuracy
        assert report is not None
        elapsed_s = time.perf_counter() - started
        print(f"{model:>10}  recall@{report.k} {report.recall_at_k:.4f}  (build + check {elapsed_s:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog-sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=7, help="per cell at C <= 1M; 2 above")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--chunk-sweep", action="store_true", help="only the CPU chunk-size sweep")
    parser.add_argument("--thread-sweep", action="store_true", help="only the 1 vs 2 threads sweep")
    parser.add_argument(
        "--model-recall", nargs="*", metavar="MODEL", help="only accuracy mode of these models at C = 1M"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    bf16_ok, bf16_reason = cpu_bf16_support()
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"bf16 on CPU: {bf16_reason}")  # fmt: skip
    cpu_reduced = torch.bfloat16 if bf16_ok else None
    if args.model_recall is not None:
        model_recall(
            args.model_recall or ["gru4rec", "narm", "stamp", "sasrec", "core"], 1_000_000, torch.bfloat16
        )
        return
    if args.chunk_sweep or args.thread_sweep:
        dtype = cpu_reduced or torch.float32
        if args.chunk_sweep:
            chunk_sweep(1_000_000, args.batch_sizes, args.repeats, dtype)
        if args.thread_sweep:
            thread_sweep(1_000_000, args.batch_sizes, args.repeats, dtype)
        return
    for catalog_size in args.catalog_sizes:
        repeats = args.repeats if catalog_size <= 1_000_000 else 2
        compare(catalog_size, args.batch_sizes, repeats, torch.device("cpu"), cpu_reduced, threads)
    if not torch.cuda.is_available():
        print("\nCUDA: not available, GPU section skipped")
        return
    for catalog_size in args.catalog_sizes:
        for reduced in (torch.bfloat16, torch.float16):
            compare(catalog_size, args.batch_sizes, args.repeats, torch.device("cuda"), reduced, threads)


if __name__ == "__main__":
    main()
