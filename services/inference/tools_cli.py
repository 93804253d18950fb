"""`etude microbench` and `etude export-model`: the inference service's offline tools.

Only argparse and torch-free option lists at import time (services/cli.py builds every parser on
each start); the handlers import torch and the cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from etude import defaults

from .models import MODEL_NAMES
from .options import DEFAULT_EMBEDDING_POLICY, EMBEDDING_POLICIES, RUNTIMES


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one comma-separated name")
    return names


def _runtimes(text: str) -> list[str]:
    runtimes = _names(text)
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise argparse.ArgumentTypeError(f"{runtime!r} is not one of {list(RUNTIMES)}")
    return runtimes


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(size.replace("_", "")) for size in _names(text)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"catalog sizes must be integers: {error}") from error
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"catalog sizes must be >= 1, got {sizes}")
    return sizes


# MicrobenchSettings fields that have a flag of the same name.
_SETTINGS_FLAGS = (
    "catalog_sizes", "runtimes", "devices", "requests", "warmup", "k",
    "embedding_policy", "alpha_length", "alpha_clicks", "seed",
)  # fmt: skip


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Registers `microbench` and `export-model` on the `etude` command."""
    bench = commands.add_parser(
        "microbench",
        help="the ETUDE paper's micro-benchmark: serial requests in-process, p90 against catalog size",
        description="For each model x catalog size x device x runtime: build the recommender in "
        "this process and send requests one at a time (B = 1, no gRPC, no batching), timing each "
        "end to end and its encoder/scoring split. Prints a table, writes microbench.csv and a "
        "log-log plot microbench.png of p90 latency against catalog size (Figure 3 of the paper). "
        "`all` models includes noop, the floor of the harness itself. Exits 1 if a cell failed.",
    )
    # Unset flags (None) take MicrobenchSettings' defaults: they live there, in the torch-side core.
    bench.add_argument(
        "--models", type=_names, default=["all"], help=f"comma-separated, or all (= {','.join(MODEL_NAMES)})"
    )
    bench.add_argument(
        "--catalog-sizes",
        dest="catalog_sizes",
        type=_sizes,
        help="comma-separated (default 10000,100000,1000000)",
    )
    bench.add_argument(
        "--device", dest="devices", type=_names, help="comma-separated: cpu,cuda (default cpu)"
    )
    bench.add_argument(
        "--runtime", dest="runtimes", type=_runtimes, help="comma-separated (default eager,jit)"
    )
    bench.add_argument("--requests", type=int, help="measured requests per cell")
    bench.add_argument("--warmup", type=int, help="unmeasured requests per cell, first")
    bench.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    bench.add_argument("--k", type=int, help="items per recommendation")
    bench.add_argument("--embedding-policy", choices=EMBEDDING_POLICIES)
    bench.add_argument("--alpha-length", type=float, help="power-law exponent of session lengths")
    bench.add_argument("--alpha-clicks", type=float, help="power-law exponent of item clicks")
    bench.add_argument("--seed", type=int, help="seed of the weights and of the sessions")
    bench.add_argument(
        "--output",
        default=None,
        help=f"folder for the CSV and plot (default {defaults.RESULTS}/microbench-<time>)",
    )
    bench.set_defaults(handler=microbench_command)

    export = commands.add_parser(
        "export-model",
        help="script a registry model (random weights) into a TorchScript model file",
        description="Writes a file that `etude serve inference --model-path` serves: a TorchScript "
        "module whose forward(item_seq [B, 50], item_seq_len [B]) returns [B, d] and which "
        "exports item_embeddings() returning the [C+1, d] table.",
    )
    export.add_argument("--model", choices=MODEL_NAMES, required=True)
    export.add_argument("--catalog-size", type=int, required=True)
    export.add_argument("--embedding-dim", type=int, default=0, help="0 = the policy's")
    export.add_argument("--embedding-policy", choices=EMBEDDING_POLICIES, default=DEFAULT_EMBEDDING_POLICY)
    export.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    export.add_argument("--output", required=True, help="file to write, e.g. model.pt")
    export.set_defaults(handler=export_model_command)


def microbench_command(args: argparse.Namespace) -> int:
    """Runs the micro-benchmark, printing each cell as it finishes and the table at the end."""
    import torch

    from .microbench import (
        CSV_NAME,
        PLOT_NAME,
        CellResult,
        MicrobenchSettings,
        format_table,
        plot_p90,
        resolve_models,
        run_microbench,
        write_csv,
    )

    given = {name: getattr(args, name) for name in _SETTINGS_FLAGS if getattr(args, name) is not None}
    try:
        settings = MicrobenchSettings(models=resolve_models(args.models), **given)
    except ValueError as error:
        print(f"etude microbench: {error}", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    output = Path(args.output or f"{defaults.RESULTS}/microbench-{time.strftime('%Y%m%d-%H%M%S')}")

    def progress(result: CellResult, done: int, total: int) -> None:
        figure = f"p90 {result.p90_ms:.3f} ms" if result.ok else f"failed: {result.error}"
        print(
            f"[{done}/{total}] {result.model} {result.runtime}/{result.device} "
            f"C={result.catalog_size:,}: {figure}",
            file=sys.stderr,
            flush=True,
        )

    print(
        f"microbench: {settings.cell_count} cell(s), {settings.requests} serial requests each "
        f"after {settings.warmup} warm-up, torch threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    results = run_microbench(settings, on_result=progress)
    print(format_table(results))
    csv_path = write_csv(results, output / CSV_NAME)
    plot_path = plot_p90(results, output / PLOT_NAME)
    print(f"wrote {csv_path} and {plot_path}")
    return 0 if all(result.ok for result in results) else 1


def export_model_command(args: argparse.Namespace) -> int:
    """Writes the model file and says how to serve it."""
    from .model_file import export_model

    try:
        exported = export_model(
            args.model,
            args.catalog_size,
            args.output,
            embedding_dim=args.embedding_dim,
            embedding_policy=args.embedding_policy,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"etude export-model: {error}", file=sys.stderr)
        return 2
    parameters = sum(p.numel() for p in exported.module.parameters())
    print(
        f"wrote {args.output}: {args.model}, catalog size {exported.catalog_size:,}, "
        f"d = {exported.embedding_dim}, {parameters:,} parameters\n"
        f"serve it with: etude serve inference --model-path {args.output}"
    )
    return 0
