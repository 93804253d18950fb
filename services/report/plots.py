"""The report's plots, rendered to SVG text in memory (matplotlib, no pyplot state): vector
graphics, sharp on any screen, written beside report.md and embedded in report.html.

Latency and rate against time during the ramp (the ETUDE paper's Figures 2 and 4) with the
inference service's CPU and memory, latency against offered rate per model, the mean latency
split as stacked bars, and per trial the latency percentile distribution and the batch sizes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..results.series import SeriesRow
from .analysis import SPLIT_PARTS, BatchSizes, LatencyDistribution, LatencySplit, StableRate, TickVerdict

_LINE_STYLES = ("-", "--", ":", "-.")


def _svg(figure: Figure) -> str:
    FigureCanvasSVG(figure)
    buffer = io.StringIO()
    # No date and a fixed salt for the element ids: the same report rebuilt gives the same files.
    with matplotlib.rc_context({"svg.hashsalt": "etude"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _log_scale_if_positive(axes: Axes, values: Sequence[float]) -> None:
    """Log scale (latencies span orders of magnitude) with plain numbers, not 4 x 10^1."""
    if not any(math.isfinite(value) and value > 0 for value in values):
        return
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(FuncFormatter(_two_and_five))


def _two_and_five(value: float, _: object) -> str:
    """Minor log ticks labelled at 2x and 5x a power of ten only: 3, 4, 6 ... would overlap."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if mantissa in (2, 5) else ""


def ramp_figure(
    trial_id: str,
    verdicts: Sequence[TickVerdict],
    series: Sequence[SeriesRow],
    slo_percentile: float,
    slo_latency_ms: float,
    stable: StableRate,
) -> str:
    """Top: p50/p90/p99 from intended send per tick (by send tick); middle: target vs achieved;
    bottom, when the controller sampled them: the inference service's CPU cores and memory."""
    sampled = any(row.inference_cpu_cores is not None for row in series)
    figure = Figure(figsize=(8, 7.5 if sampled else 5.5), layout="constrained")
    axes_column = figure.subplots(3 if sampled else 2, 1, sharex=True)
    latency_axes, rate_axes = axes_column[0], axes_column[1]
    ticks = [verdict.tick for verdict in verdicts]
    for name, values in (
        ("p50", [verdict.p50_ms for verdict in verdicts]),
        ("p90", [verdict.p90_ms for verdict in verdicts]),
        ("p99", [verdict.p99_ms for verdict in verdicts]),
    ):
        latency_axes.plot(ticks, values, label=f"{name} (OK answers)", linewidth=1.2)
    latency_axes.axhline(
        slo_latency_ms, color="black", linestyle="--", linewidth=0.8, label=f"SLO p{slo_percentile:g} bound"
    )
    failed = [verdict.tick for verdict in verdicts if verdict.met is False]
    if failed:
        latency_axes.scatter(
            failed, [slo_latency_ms] * len(failed), marker="x", color="red", zorder=3, label="tick missed SLO"
        )
    _log_scale_if_positive(latency_axes, [verdict.p99_ms for verdict in verdicts])
    latency_axes.set_ylabel("latency from intended (ms)")
    latency_axes.set_title(trial_id)
    latency_axes.legend(loc="upper left", fontsize="small")

    rate_ticks = [row.tick for row in series]
    rate_axes.plot(rate_ticks, [row.target_rate_per_s for row in series], label="target", color="black")
    rate_axes.plot(rate_ticks, [row.ok for row in series], label="OK answers/s", color="tab:green")
    if any(row.errors for row in series):
        rate_axes.plot(rate_ticks, [row.errors for row in series], label="errors/s", color="tab:red")
    if any(row.not_sent for row in series):
        rate_axes.plot(rate_ticks, [row.not_sent for row in series], label="not sent/s", color="tab:orange")
    for axes in (latency_axes, rate_axes):
        if stable.last_stable_tick is not None:
            axes.axvline(stable.last_stable_tick, color="tab:blue", linestyle=":", linewidth=1)
    if stable.last_stable_tick is not None:
        rate_axes.annotate(
            f"SLO held to {stable.rate_per_s:g}/s",
            (stable.last_stable_tick, stable.rate_per_s),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize="small",
            color="tab:blue",
        )
    rate_axes.set_ylabel("requests/s")
    rate_axes.legend(loc="upper left", fontsize="small")
    if sampled:
        _resources(axes_column[2], series)
    axes_column[-1].set_xlabel("time (s, one tick per second)")
    return _svg(figure)


def _resources(cpu_axes: Axes, series: Sequence[SeriesRow]) -> None:
    """CPU cores busy (left axis) and resident memory (right axis) of the inference service,
    and the GPU's busy fraction (on the left axis) when NVML sampled it."""
    ticks = [row.tick for row in series]
    cpu_cores = [_nan(row.inference_cpu_cores) for row in series]
    cpu_axes.plot(ticks, cpu_cores, color="tab:purple", label="CPU cores")
    gpu_busy = [_nan(row.gpu_utilization_percent) / 100 for row in series]
    if any(math.isfinite(value) for value in gpu_busy):
        cpu_axes.plot(ticks, gpu_busy, color="tab:olive", label="GPU busy (fraction)")
    cpu_axes.set_ylabel("CPU cores busy")
    # Room above the highest value, where a flat line would otherwise hide in the frame.
    cpu_axes.set_ylim(0, 1.25 * _finite_max([*cpu_cores, *gpu_busy]))
    memory_axes = cpu_axes.twinx()
    rss_mb = [_nan(row.inference_rss_mb) for row in series]
    memory_axes.plot(ticks, rss_mb, color="tab:brown", linestyle="--", label="resident MiB")
    memory_axes.set_ylabel("resident memory (MiB)")
    memory_axes.set_ylim(0, 1.25 * _finite_max(rss_mb))
    lines = cpu_axes.get_lines() + memory_axes.get_lines()
    cpu_axes.legend(lines, [str(line.get_label()) for line in lines], loc="lower right", fontsize="small")
    cpu_axes.set_title("inference service (sampled by the controller once a second)", fontsize="small")


def _finite_max(values: Sequence[float]) -> float:
    """The highest finite value, 1 when there is none (an axis still needs a range)."""
    return max((value for value in values if math.isfinite(value) and value > 0), default=1.0)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


@dataclass(frozen=True)
class RateLine:
    """One line of the latency-against-rate plot: a model on one hardware/runtime variant."""

    model: str
    variant: str  # hardware and runtime, drawn as the line style
    rates_per_s: Sequence[float]
    latencies_ms: Sequence[float]


def latency_vs_rate_figure(
    title: str, lines: Sequence[RateLine], slo_percentile: float, slo_latency_ms: float
) -> str:
    """The SLO percentile of each ramp tick against its offered rate, one line per model."""
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    models = sorted({line.model for line in lines})
    variants = sorted({line.variant for line in lines})
    colors = {model: f"C{index % 10}" for index, model in enumerate(models)}
    styles = {variant: _LINE_STYLES[index % len(_LINE_STYLES)] for index, variant in enumerate(variants)}
    for line in lines:
        axes.plot(
            line.rates_per_s,
            line.latencies_ms,
            color=colors[line.model],
            linestyle=styles[line.variant],
            marker=".",
            label=f"{line.model} ({line.variant})",
        )
    axes.axhline(slo_latency_ms, color="black", linestyle="--", linewidth=0.8, label="SLO bound")
    _log_scale_if_positive(axes, [value for line in lines for value in line.latencies_ms])
    axes.set_xlabel("offered rate (requests/s)")
    axes.set_ylabel(f"p{slo_percentile:g} latency from intended (ms)")
    axes.set_title(title)
    axes.legend(fontsize="small")
    return _svg(figure)


def latency_split_figure(trial_ids: Sequence[str], splits: Sequence[LatencySplit]) -> str:
    """Stacked bars of each part's mean per trial, and the mean latency they add up to.

    Means, because a mean of a sum is the sum of the means; percentiles of parts do not stack.
    """
    figure = Figure(figsize=(9, 1.6 + 0.45 * len(trial_ids)), layout="constrained")
    axes = figure.subplots()
    positions = list(range(len(trial_ids)))
    left = [0.0] * len(trial_ids)
    for index, part in enumerate(SPLIT_PARTS):
        widths = [split.mean_ms.get(part, 0.0) for split in splits]
        axes.barh(positions, widths, left=left, height=0.6, color=f"C{index}", label=part)
        left = [start + width for start, width in zip(left, widths, strict=True)]
    totals = [split.mean_total_ms for split in splits]
    axes.scatter(
        totals, positions, marker="|", s=400, color="black", zorder=3, label="mean latency from intended"
    )
    axes.set_yticks(positions, list(trial_ids), fontsize="small")
    axes.invert_yaxis()
    axes.set_xlabel("mean of each part (ms), stacked: they add up to the mean latency")
    axes.set_xlim(left=0)
    figure.legend(loc="outside lower center", ncols=3, fontsize="small")
    return _svg(figure)


def _percentile_label(one_in: float, _: object) -> str:
    """1 / (1 - p) as the percentile p: 10 -> 90%, 1000 -> 99.9%."""
    percentile = 100 * (1 - 1 / one_in)
    return f"{percentile:.10g}%"


def trial_distributions_figure(
    trial_id: str,
    distribution: LatencyDistribution | None,
    batches: BatchSizes | None,
    slo_percentile: float,
    slo_latency_ms: float,
) -> str:
    """Left: latency against percentile on a log 1/(1-p) axis (HdrHistogram's percentile
    distribution plot); right: how many batches of each size (power-of-two bins) answered."""
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    latency_axes, batch_axes = figure.subplots(1, 2, width_ratios=(3, 2))
    if distribution is not None:
        one_in = [1 / (1 - p / 100) for p in distribution.percentiles]
        latency_axes.plot(one_in, distribution.latencies_ms, color="tab:blue", drawstyle="steps-post")
        latency_axes.set_xscale("log")
        decades = math.ceil(math.log10(max(one_in)))
        latency_axes.xaxis.set_major_locator(FixedLocator([10.0**d for d in range(decades + 1)]))
        latency_axes.xaxis.set_minor_locator(NullLocator())
        latency_axes.xaxis.set_major_formatter(FuncFormatter(_percentile_label))
        latency_axes.axhline(slo_latency_ms, color="black", linestyle="--", linewidth=0.8, label="SLO bound")
        latency_axes.axvline(
            1 / (1 - slo_percentile / 100),
            color="grey",
            linestyle=":",
            linewidth=0.8,
            label=f"p{slo_percentile:g}",
        )
        _log_scale_if_positive(latency_axes, distribution.latencies_ms)
        latency_axes.legend(loc="upper left", fontsize="small")
        latency_axes.set_title(
            f"latency by percentile ({distribution.requests:,} OK answers, max {distribution.max_ms:.3g} ms)",
            fontsize="small",
        )
    latency_axes.set_xlabel("percentile")
    latency_axes.set_ylabel("latency from intended (ms)")
    if batches is not None:
        bins: dict[int, float] = {}
        for size, count in batches.batches_by_size.items():
            power = size.bit_length() - 1  # [2^k, 2^(k+1)) -> k
            bins[power] = bins.get(power, 0.0) + count
        powers = list(range(max(bins) + 1))
        labels = [str(2**k) if k == 0 else f"{2**k}-{2 ** (k + 1) - 1}" for k in powers]
        batch_axes.bar(range(len(powers)), [bins.get(k, 0.0) for k in powers], color="tab:gray")
        batch_axes.set_xticks(
            range(len(powers)), labels, rotation=45 if len(powers) > 5 else 0, fontsize="small"
        )
        batch_axes.set_title(
            f"batches by size ({batches.batches:,.0f} batches, mean {batches.mean_batch_size:.2f})",
            fontsize="small",
        )
    batch_axes.set_xlabel("batch size (requests)")
    batch_axes.set_ylabel("batches")
    figure.suptitle(trial_id, fontsize="medium")
    return _svg(figure)
