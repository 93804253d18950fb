"""The ETUDE paper's micro-benchmark (Figure 3): serial requests (B = 1) through the recommender
core in-process, per model x catalog size x runtime x device; latency percentiles, the
encoder/scoring split, a CSV and a log-log plot of p90 latency against catalog size.

No gRPC and no batching: each request is `Recommender.recommend_batch([query])` (padding into
tensors, encoder, scoring and exact top-k, conversion to lists), timed end to end. The same
session is then run again through the encoder alone and through the scorer alone (each followed
by a CUDA synchronisation on cuda) for the split. Every cell of one catalog size replays the same
sessions, drawn from the workload generator. `all` models means every registered model
including noop, whose line is the floor that padding, conversion and the harness cost.
"""

from __future__ import annotations

import csv
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..workload.generator import SessionBatch, SessionGenerator, SyntheticWorkload
from .models import MODEL_NAMES
from .models.base import MAX_SESSION_LENGTH
from .options import DEFAULT_EMBEDDING_POLICY, DEFAULT_K, EMBEDDING_POLICIES, RUNTIMES
from .recommender import Recommender, RecommenderConfig, SessionQuery

ALL_MODELS = "all"
DEFAULT_CATALOG_SIZES = (10_000, 100_000, 1_000_000)
DEFAULT_RUNTIMES = ("eager", "jit")
DEFAULT_DEVICES = ("cpu",)
DEFAULT_REQUESTS = 200
DEFAULT_WARMUP = 20
# Classic power-law exponents of session lengths and item clicks (examples/quickstart.yaml's).
DEFAULT_ALPHA_LENGTH = 2.2
DEFAULT_ALPHA_CLICKS = 1.8
CSV_NAME = "microbench.csv"
PLOT_NAME = "microbench.png"


@dataclass(frozen=True)
class MicrobenchSettings:
    """What to measure; every combination of models x catalog sizes x devices x runtimes is a cell."""

    models: Sequence[str]
    catalog_sizes: Sequence[int] = DEFAULT_CATALOG_SIZES
    runtimes: Sequence[str] = DEFAULT_RUNTIMES
    devices: Sequence[str] = DEFAULT_DEVICES
    requests: int = DEFAULT_REQUESTS
    warmup: int = DEFAULT_WARMUP
    k: int = DEFAULT_K
    embedding_policy: str = DEFAULT_EMBEDDING_POLICY
    alpha_length: float = DEFAULT_ALPHA_LENGTH
    alpha_clicks: float = DEFAULT_ALPHA_CLICKS
    seed: int = 0

    def __post_init__(self) -> None:
        for name, values in (
            ("models", self.models),
            ("catalog_sizes", self.catalog_sizes),
            ("runtimes", self.runtimes),
            ("devices", self.devices),
        ):
            if not values:
                raise ValueError(f"{name} must not be empty")
        if min(self.catalog_sizes) < 1:
            raise ValueError(f"catalog_sizes must be >= 1, got {list(self.catalog_sizes)}")
        for device in self.devices:
            try:
                torch.device(device)
            except RuntimeError as error:
                raise ValueError(
                    f"devices: {device!r} is not a torch device (cpu, cuda, cuda:1, ...)"
                ) from error
        for runtime in self.runtimes:
            if runtime not in RUNTIMES:
                raise ValueError(f"runtimes: {runtime!r} is not one of {list(RUNTIMES)}")
        if self.embedding_policy not in EMBEDDING_POLICIES:
            raise ValueError(f"embedding_policy must be one of {list(EMBEDDING_POLICIES)}")
        if self.requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.requests}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        for name, alpha in (("alpha_length", self.alpha_length), ("alpha_clicks", self.alpha_clicks)):
            if not alpha > 1.0:
                raise ValueError(f"{name} must be > 1 (a power-law exponent), got {alpha}")

    @property
    def cell_count(self) -> int:
        return len(self.models) * len(self.catalog_sizes) * len(self.runtimes) * len(self.devices)


@dataclass(frozen=True)
class CellResult:
    """One cell's figures in milliseconds (NaN when it failed: `error` then says why)."""

    model: str
    device: str
    runtime: str
    catalog_size: int
    embedding_dim: int = 0
    threads: int = 0
    requests: int = 0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    encoder_p50_ms: float = math.nan
    scoring_p50_ms: float = math.nan
    build_s: float = math.nan
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


CSV_COLUMNS = tuple(f.name for f in fields(CellResult))


def resolve_models(names: Sequence[str]) -> list[str]:
    """Expands `all` into every registered model (noop included) and refuses unknown names."""
    resolved: list[str] = []
    for name in names:
        for model in MODEL_NAMES if name == ALL_MODELS else (name,):
            if model not in MODEL_NAMES:
                raise ValueError(f"model {model!r} is not one of {[ALL_MODELS, *MODEL_NAMES]}")
            if model not in resolved:
                resolved.append(model)
    return resolved


def percentile_ms(latencies_ns: Sequence[int] | np.ndarray, percentile: float) -> float:
    """Nearest-rank percentile in ms: the smallest latency at least `percentile`% of requests
    did not exceed (an observed value; exact, no histogram rounding)."""
    values = np.asarray(latencies_ns, dtype=np.int64)
    if values.size == 0:
        raise ValueError("no latencies to summarise")
    return float(np.percentile(values, percentile, method="inverted_cdf")) / 1e6


def workload_sessions(settings: MicrobenchSettings, catalog_size: int) -> SessionBatch:
    """The warm-up and measured sessions of every cell of one catalog size."""
    workload = SyntheticWorkload(catalog_size, settings.alpha_length, settings.alpha_clicks, settings.seed)
    return SessionGenerator(workload).next_batch(settings.warmup + settings.requests)


def _error_text(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _session_tensors(query: SessionQuery, device: torch.device) -> tuple[Tensor, Tensor]:
    item_seq = torch.zeros(1, MAX_SESSION_LENGTH, dtype=torch.int64)
    item_seq[0, : len(query.item_ids)] = torch.from_numpy(query.item_ids)
    return item_seq.to(device), torch.tensor([len(query.item_ids)], dtype=torch.int64, device=device)


def _time_request(recommender: Recommender, query: SessionQuery) -> tuple[int, int, int]:
    """(end to end, encoder alone, scoring + top-k alone) in ns for one session, B = 1."""
    device = recommender.device
    started = time.perf_counter_ns()
    recommender.recommend_batch([query])  # ends with a device-to-host copy: synchronised
    end_to_end_ns = time.perf_counter_ns() - started
    item_seq, item_seq_len = _session_tensors(query, device)
    with torch.inference_mode():
        _synchronize(device)
        started = time.perf_counter_ns()
        session_repr = recommender.served_encoder(item_seq, item_seq_len)
        _synchronize(device)
        encoded = time.perf_counter_ns()
        recommender.scorer.top_k(session_repr, query.k, item_seq)
        _synchronize(device)
        scored = time.perf_counter_ns()
    return end_to_end_ns, encoded - started, scored - encoded


def bench_cell(
    settings: MicrobenchSettings,
    model: str,
    catalog_size: int,
    runtime: str,
    device: str,
    sessions: SessionBatch,
) -> CellResult:
    """Builds one recommender and times `settings.requests` serial requests after the warm-up.

    Raises whatever building or running the model raises; run_microbench reports it.
    """
    started = time.perf_counter()
    recommender = Recommender(
        RecommenderConfig(
            model,
            catalog_size,
            embedding_policy=settings.embedding_policy,
            device=device,
            runtime=runtime,
            seed=settings.seed,
            warmup=False,  # B = 1 warm-up requests below: the only batch size measured
        )
    )
    build_s = time.perf_counter() - started
    k = min(settings.k, catalog_size)
    queries = [recommender.validate(sessions.session(i).tolist(), k) for i in range(len(sessions))]
    for query in queries[: settings.warmup]:
        _time_request(recommender, query)
    timings = np.array([_time_request(recommender, query) for query in queries[settings.warmup :]])
    end_to_end, encoder, scoring = timings.T
    return CellResult(
        model=model,
        device=str(recommender.device),
        runtime=runtime,
        catalog_size=catalog_size,
        embedding_dim=recommender.embedding_dim,
        threads=torch.get_num_threads(),
        requests=len(end_to_end),
        p50_ms=percentile_ms(end_to_end, 50),
        p90_ms=percentile_ms(end_to_end, 90),
        p99_ms=percentile_ms(end_to_end, 99),
        encoder_p50_ms=percentile_ms(encoder, 50),
        scoring_p50_ms=percentile_ms(scoring, 50),
        build_s=build_s,
    )


def run_microbench(
    settings: MicrobenchSettings, on_result: Callable[[CellResult, int, int], None] | None = None
) -> list[CellResult]:
    """Runs every cell, one at a time; a cell that fails is reported with its reason, not raised.

    `on_result(result, done, total)` is called after each cell (progress output).
    """
    results: list[CellResult] = []
    for catalog_size in settings.catalog_sizes:
        sessions = workload_sessions(settings, catalog_size)
        for device in settings.devices:
            for runtime in settings.runtimes:
                for model in settings.models:
                    try:
                        result = bench_cell(settings, model, catalog_size, runtime, device, sessions)
                    except Exception as error:
                        result = CellResult(model, device, runtime, catalog_size, error=_error_text(error))
                    # Free this cell's catalog (and the CUDA cache) before the next is built.
                    gc.collect()
                    if device.startswith("cuda") and torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    results.append(result)
                    if on_result is not None:
                        on_result(result, len(results), settings.cell_count)
    return results


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


TABLE_HEADER = (
    "model", "device", "runtime", "catalog", "d",
    "p50 ms", "p90 ms", "p99 ms", "encoder p50", "scoring p50", "status",
)  # fmt: skip


def table_row(result: CellResult) -> tuple[str, ...]:
    """One row of the printed table (failed cells show their reason as the status)."""
    return (
        result.model,
        result.device,
        result.runtime,
        f"{result.catalog_size:,}",
        str(result.embedding_dim) if result.ok else "-",
        _ms(result.p50_ms),
        _ms(result.p90_ms),
        _ms(result.p99_ms),
        _ms(result.encoder_p50_ms),
        _ms(result.scoring_p50_ms),
        "ok" if result.ok else f"failed: {result.error}",
    )


def format_table(results: Sequence[CellResult]) -> str:
    """A fixed-width table of every cell, numbers right-aligned."""
    rows = [TABLE_HEADER, *(table_row(result) for result in results)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE_HEADER) - 1)]
    numeric = range(3, len(TABLE_HEADER) - 1)
    lines = []
    for row in rows:
        cells = [
            value.rjust(width) if column in numeric else value.ljust(width)
            for column, (value, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def write_csv(results: Sequence[CellResult], path: str | Path) -> Path:
    """One row per cell, CSV_COLUMNS; a failed cell has empty figures and its error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as output:
        writer = csv.DictWriter(output, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for result in results:
            row = asdict(result)
            writer.writerow(
                {key: "" if isinstance(v, float) and math.isnan(v) else v for key, v in row.items()}
            )
    return path


_LINE_STYLES = ("-", "--", ":", "-.")
_DEVICE_MARKERS = {"cpu": "o", "cuda": "s"}


def plot_p90(results: Sequence[CellResult], path: str | Path) -> Path:
    """Log-log p90 latency against catalog size (Figure 3 of the paper): one colour per model,
    one line style per runtime/device; failed cells are left out."""
    # The object API with the Agg canvas: no pyplot, no global backend state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    ok = [result for result in results if result.ok]
    models = list(dict.fromkeys(result.model for result in ok))
    variants = list(dict.fromkeys((result.runtime, result.device) for result in ok))
    # tab20's dark shades first: eleven models need more distinct colours than the default ten.
    palette = [
        f"tab:{name}"
        for name in ("blue", "orange", "green", "red", "purple", "brown", "pink", "gray", "olive", "cyan")
    ]
    palette += ["black", "navy", "darkgoldenrod", "teal", "magenta", "lime"]
    colours = [palette[index % len(palette)] for index in range(len(models))]
    for model, colour in zip(models, colours, strict=True):
        for index, (runtime, device) in enumerate(variants):
            line = sorted(
                (r.catalog_size, r.p90_ms)
                for r in ok
                if (r.model, r.runtime, r.device) == (model, runtime, device)
            )
            if not line:
                continue
            sizes, p90s = zip(*line, strict=True)
            axes.plot(
                sizes,
                p90s,
                color=colour,
                linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
                marker=_DEVICE_MARKERS.get(device.split(":")[0], "^"),
                label=f"{model} ({runtime}, {device})",
            )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("catalog size (items)")
    axes.set_ylabel("p90 latency per request (ms)")
    axes.set_title("Micro-benchmark: serial requests (B = 1), p90 latency")
    axes.grid(True, which="both", alpha=0.3)
    if ok:
        axes.set_xticks(sorted({result.catalog_size for result in ok}))
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes.text(0.5, 0.5, "no cell succeeded", transform=axes.transAxes, ha="center")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
