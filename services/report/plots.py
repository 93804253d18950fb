"""The report's plots, rendered to PNG bytes in memory (matplotlib's Agg canvas, no pyplot state).

Latency and rate against time during the ramp (the ETUDE paper's Figures 2 and 4), latency
against offered rate per model, and the latency split as stacked bars.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..results.series import SeriesRow
from .analysis import SPLIT_PARTS, LatencySplit, StableRate, TickVerdict

DPI = 100
_LINE_STYLES = ("-", "--", ":", "-.")


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _log_scale_if_positive(axes: Axes, values: Sequence[float]) -> None:
    """Log scale (latencies span orders of magnitude) with plain numbers, not 4 x 10^1."""
    if not any(math.isfinite(value) and value > 0 for value in values):
        return
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)


def ramp_figure(
    trial_id: str,
    verdicts: Sequence[TickVerdict],
    series: Sequence[SeriesRow],
    slo_percentile: float,
    slo_latency_ms: float,
    stable: StableRate,
) -> bytes:
    """Top: p50/p90/p99 from intended send per tick (by send tick); bottom: target vs achieved."""
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    latency_axes, rate_axes = figure.subplots(2, 1, sharex=True)
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
    rate_axes.set_xlabel("time (s, one tick per second)")
    rate_axes.set_ylabel("requests/s")
    rate_axes.legend(loc="upper left", fontsize="small")
    return _png(figure)


@dataclass(frozen=True)
class RateLine:
    """One line of the latency-against-rate plot: a model on one hardware/runtime variant."""

    model: str
    variant: str  # hardware and runtime, drawn as the line style
    rates_per_s: Sequence[float]
    latencies_ms: Sequence[float]


def latency_vs_rate_figure(
    title: str, lines: Sequence[RateLine], slo_percentile: float, slo_latency_ms: float
) -> bytes:
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
    return _png(figure)


def latency_split_figure(trial_ids: Sequence[str], splits: Sequence[LatencySplit]) -> bytes:
    """Stacked bars of each part's p50 (left) and p90 (right) per trial."""
    figure = Figure(figsize=(9, 2.0 + 0.5 * len(trial_ids)), layout="constrained")
    axes_p50, axes_p90 = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(trial_ids)))
    for axes, name in ((axes_p50, "p50"), (axes_p90, "p90")):
        left = [0.0] * len(trial_ids)
        for index, part in enumerate(SPLIT_PARTS):
            widths = [getattr(split, f"{name}_ms")[part] for split in splits]
            axes.barh(positions, widths, left=left, color=f"C{index}", label=part)
            left = [start + width for start, width in zip(left, widths, strict=True)]
        axes.set_xlabel(f"{name} of each part (ms)")
        axes.set_title(f"{name} per part")
    axes_p50.set_yticks(positions, list(trial_ids), fontsize="small")
    axes_p50.invert_yaxis()
    handles, labels = axes_p50.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(SPLIT_PARTS), fontsize="small")
    return _png(figure)
