"""What the report says, as document blocks: the verdict with the deployment table first, then the
experiment, the trials, the SLO search probes, the latency split (means that add up, percentiles,
from timing and from traces), the per-request timings of records.csv, the plots per trial and
the workload fits. Text and tables only; the numbers come from analysis, fits and deployments."""

from __future__ import annotations

import math
from collections.abc import Sequence

from etude import defaults
from etude.v1 import controller_pb2, experiment_pb2

from ..results.records import TIMING_COLUMNS
from .analysis import SPLIT_PARTS, STABILITY_RULE, StableRate
from .deployments import DeploymentRow
from .distributed import distributed_blocks
from .document import Block, Bullets, Heading, Image, Paragraph, Table
from .fits import REFERENCE_DRAWS, FittedExponent, ReplayedLog, workload_of
from .notes import environment_bullets, inference_environments, precision_and_loadgen_notes
from .trials import TrialReport

State = experiment_pb2.TrialState


def variant(trial: experiment_pb2.Trial) -> str:
    """A trial's hardware, runtime and repetition, as a plot's legend names it."""
    label = f"{trial.hardware.name}, {trial.runtime}"
    return label + (f", r{trial.repetition}" if trial.repetition > 1 else "")


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}"


def _rate(value: float) -> str:
    return f"{value:,.1f}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _spec_bullets(
    experiment: controller_pb2.Experiment, replayed_log: ReplayedLog | None = None
) -> tuple[str, ...]:
    spec = experiment.spec
    dims = sorted({(trial.trial.catalog_size, trial.trial.embedding_dim) for trial in experiment.trials})
    hardware = "; ".join(
        f"{option.name} ({option.device}, {_money(option.monthly_cost_usd)}/month per replica, "
        f"{option.replicas or 1} replica{'' if (option.replicas or 1) == 1 else 's'}"
        + (f", {option.cpu_threads} CPU threads" if option.cpu_threads else "")
        + (f", {option.executors} executors" if option.executors > 1 else "")
        + ")"
        for option in spec.hardware
    )
    load, slo, batching = spec.load, spec.slo, spec.batching
    return (
        "Models: " + ", ".join(model.name for model in spec.models),
        "Catalog sizes: "
        + ", ".join(f"{size:,}" for size in spec.catalog_sizes)
        + f"; embedding policy {spec.embedding_policy or defaults.EMBEDDING_POLICY}"
        + (" (" + ", ".join(f"d = {dim} at {size:,} items" for size, dim in dims) + ")" if dims else ""),
        f"Workload: {_describe_workload(experiment, replayed_log)}",
        f"Hardware: {hardware}",
        "Runtimes: " + ", ".join(spec.runtimes),
        f"Batching: up to {batching.max_batch_size} requests, at most {batching.max_batch_delay_ms:g} ms "
        f"wait from the oldest request, queue bound {batching.max_queue_size}",
        f"Load: linear ramp to {load.target_rate_per_s:g} requests/s over {load.ramp_duration_s} s, "
        f"hold {load.hold_duration_s} s, request timeout {load.request_timeout_ms} ms, k = {load.k}",
        f"SLO: p{slo.percentile:g} <= {slo.latency_ms:g} ms at {slo.rate_per_s:g} requests/s "
        "(latency from the intended send time)",
        f"Target: {spec.target or defaults.TARGET}; repetitions: {spec.repetitions or 1}",
    )


def _describe_workload(experiment: controller_pb2.Experiment, replayed_log: ReplayedLog | None) -> str:
    workload = experiment.spec.workload
    if workload.source != "replay":
        cap = workload.max_session_length or defaults.MAX_SESSION_LENGTH
        return f"{_describe_synthetic(experiment)}; sessions capped at {cap} clicks"
    pace = (
        f"each click at its time in the log / {workload.speedup or 1:g} (open loop)"
        if workload.pace == "log"
        else "at the load profile's rate"
    )
    text = (
        f"replay of {workload.path} in log order, sent {pace}; every session whole (the models read "
        f"its last {defaults.MAX_SESSION_LENGTH} clicks)"
    )
    return f"{text}; {replayed_log.describe()}" if replayed_log is not None else text


def _describe_synthetic(experiment: controller_pb2.Experiment) -> str:
    """Source, seed and which parameterisation of the two distributions the sessions used."""
    spec = experiment.spec
    workload = spec.workload
    text = f"{workload.source or defaults.WORKLOAD_SOURCE} (Algorithm 1), seed {workload.seed}"
    if workload.preset:
        text += f", preset {workload.preset}"
    generator = workload_of(experiment.trials[0].trial, spec) if experiment.trials else None
    if generator is None:
        return text
    if generator.length_fit is None and generator.clicks_fit is None:
        return (
            f"{text}; classic power-law exponents p(x) ~ x^-alpha (a value is the floor of a "
            f"continuous Pareto draw on x >= 1): alpha_length {generator.alpha_length:g}, "
            f"alpha_clicks {generator.alpha_clicks:g}"
        )
    return f"{text}; {generator.describe()} (floored, at least 1)"


def _errors(summary: object) -> str:
    errors = dict(summary.errors_by_status)  # type: ignore[attr-defined]
    total = sum(errors.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{name} {count}" for name, count in sorted(errors.items())) + ")"


def _stable_cell(stable: StableRate | None) -> str:
    if stable is None:
        return "-"
    if stable.last_stable_tick is None:
        return "never met"
    return f"{stable.rate_per_s:g}" + (" (held throughout)" if stable.held_throughout else "")


def _trial_table(experiment: controller_pb2.Experiment, trials: Sequence[TrialReport]) -> Table:
    header = (
        "trial", "state", "ok/s run", "ok/s hold", "p50 ms", "p90 ms", "p99 ms", "max ms",
        "errors (by status)", "not sent", "SLO (hold)", "highest SLO rate/s", "strict",
    )  # fmt: skip
    rows = []
    for trial in trials:
        result = trial.result
        state = State.Name(result.state).removeprefix("TRIAL_STATE_").lower()
        if not result.HasField("summary"):
            rows.append((trial.trial_id, state, *["-"] * 8, "-", "-", "-"))
            continue
        summary = result.summary
        latency = summary.latency_from_intended
        rows.append(
            (
                trial.trial_id,
                state,
                _rate(summary.achieved_rate_per_s),
                _rate(summary.achieved_hold_rate_per_s),
                _ms(latency.p50_ms),
                _ms(latency.p90_ms),
                _ms(latency.p99_ms),
                _ms(latency.max_ms),
                _errors(summary),
                str(summary.requests_not_sent),
                "met" if result.slo_met else "MISSED",
                _stable_cell(trial.stable)
                if trial.searched_rate_per_s is None
                else f"{trial.searched_rate_per_s:g} (search)",
                _stable_cell(trial.strict),
            )
        )
    return Table(header, tuple(rows))


def _trial_notes(experiment: controller_pb2.Experiment, trials: Sequence[TrialReport]) -> tuple[str, ...]:
    notes = []
    for trial in trials:
        parts = []
        if trial.result.slo_verdict:
            parts.append(f"runner's verdict: {trial.result.slo_verdict}")
        if trial.result.error:
            parts.append(f"error: {trial.result.error}")
        if trial.problem:
            parts.append(trial.problem)
        parts += precision_and_loadgen_notes(trial.result)
        stable = trial.stable
        if stable is not None:
            if stable.broken_at_tick is not None:
                verdict = next(v for v in trial.verdicts if v.tick == stable.broken_at_tick)
                parts.append(
                    f"SLO broke at tick {verdict.tick} (target {verdict.target_rate_per_s:g}/s: "
                    f"p{experiment.spec.slo.percentile:g} {_ms(verdict.slo_latency_ms)} ms, "
                    f"{verdict.ok} OK of {verdict.offered} called for)"
                )
            if stable.forgiven_ticks:
                parts.append("isolated noisy ticks forgiven: " + ", ".join(map(str, stable.forgiven_ticks)))
        if parts:
            notes.append(f"{trial.trial_id}: " + "; ".join(parts))
    return tuple(notes)


def _search_blocks(trials: Sequence[TrialReport]) -> list[Block]:
    """The probes of `etude search` trials: every constant-rate test, in the order run."""
    rows = []
    for trial in trials:
        for index, probe in enumerate(trial.result.probes, start=1):
            latency = probe.summary.latency_from_intended
            rows.append(
                (
                    trial.trial_id,
                    str(index),
                    f"{probe.rate_per_s:g}",
                    "met" if probe.slo_met else "MISSED",
                    _rate(probe.summary.achieved_hold_rate_per_s),
                    _ms(latency.p90_ms),
                    probe.verdict,
                )
            )
    if not rows:
        return []
    header = ("trial", "probe", "rate/s", "SLO", "ok/s hold", "p90 ms", "verdict")
    return [
        Heading(3, "SLO search probes"),
        Paragraph(
            "Constant-rate probes of `etude search` (its stability rule is in each verdict); a "
            "searched trial's plots and split come from the probe that sustained the highest rate."
        ),
        Table(header, tuple(rows)),
    ]


def _split_table(trials: Sequence[TrialReport]) -> Table:
    """p50 / p90 of each part, per trial."""
    header = ("trial", "OK answers", *(f"{part} p50 / p90 ms" for part in SPLIT_PARTS))
    rows = []
    for trial in trials:
        split = trial.split
        if split is None:
            continue
        rows.append(
            (
                trial.trial_id,
                str(split.requests),
                *(f"{_ms(split.p50_ms[part])} / {_ms(split.p90_ms[part])}" for part in SPLIT_PARTS),
            )
        )
    return Table(header, tuple(rows))


def _timing_blocks(trials: Sequence[TrialReport]) -> list[Block]:
    """Every duration column of records.csv (TIMING_COLUMNS: a new `_us` column shows up here)."""
    timed = [trial for trial in trials if trial.timings is not None]
    if not timed:
        return []
    header = ("trial", "OK answers", *(f"{name} p50 / p90 ms" for name in TIMING_COLUMNS))
    rows = []
    for trial in timed:
        timings = trial.timings
        assert timings is not None
        rows.append(
            (
                trial.trial_id,
                str(timings.requests),
                *(f"{_ms(timings.p50_ms[name])} / {_ms(timings.p90_ms[name])}" for name in TIMING_COLUMNS),
            )
        )
    return [
        Heading(3, "Per-request timings (records.csv)"),
        Paragraph(
            "p50 and p90 of every duration column of records.csv over the OK answers, as recorded "
            "per request (the load generator's clock, and the split the inference service returned)."
        ),
        Table(header, tuple(rows)),
    ]


def _trace_split_blocks(trials: Sequence[TrialReport]) -> list[Block]:
    """The split measured by the sampled OpenTelemetry traces, next to the timing-based one."""
    traced = [trial for trial in trials if trial.traces is not None]
    blocks: list[Block] = [Heading(3, "Latency split from traces")]
    if not traced:
        return [
            *blocks,
            Paragraph("No trace files: tracing was off (ETUDE_TRACE_SAMPLE_RATIO=0) or unavailable."),
        ]
    header = (
        "trial",
        "traced OK",
        *(f"{part} p50 / p90 ms" for part in SPLIT_PARTS),
        "max |trace - timing| ms",
    )
    rows = []
    notes = []
    for trial in traced:
        traces = trial.traces
        assert traces is not None
        split = traces.split
        parts = (
            (f"{_ms(split.p50_ms[part])} / {_ms(split.p90_ms[part])}" for part in SPLIT_PARTS)
            if split is not None
            else ("-" for _ in SPLIT_PARTS)
        )
        worst = max(traces.max_difference_ms.values(), default=0.0)
        rows.append((trial.trial_id, str(traces.matched), *parts, f"{worst:.3f}" if traces.matched else "-"))
        unread = f" ({traces.unreadable_lines} unreadable lines)" if traces.unreadable_lines else ""
        notes.append(f"{trial.trial_id}: {traces.agreement()}; {traces.spans} spans{unread}.")
    blocks += [
        Paragraph(
            "The same parts measured by the spans of the sampled requests (a fraction set by "
            "ETUDE_TRACE_SAMPLE_RATIO or OTEL_TRACES_SAMPLER_ARG, default 1%): send delay from the "
            "client span's intended-send attribute, network and serialisation = client span from "
            "actual send - server span, queueing and inference from the server span's children. "
            "Each traced request is joined with its own records.csv row and its parts compared "
            "with the timing fields; the last column is the largest difference of any part."
        ),
        Table(header, tuple(rows)),
        Bullets(tuple(notes)),
    ]
    return blocks


def _fit_table(fitted: Sequence[FittedExponent]) -> Table:
    rows = []
    for exponent in fitted:
        error = exponent.relative_error
        rows.append(
            (
                exponent.name,
                exponent.requested,
                "-" if exponent.expected is None else f"{exponent.expected:.4f}",
                "-" if exponent.fitted is None else f"{exponent.fitted:.4f}",
                "-" if error is None else f"{100 * error:+.1f}%",
                f"{exponent.sample_size:,}",
                exponent.source,
            )
        )
    header = (
        "quantity",
        "requested",
        "expected alpha",
        "fitted alpha",
        "difference",
        "sample",
        "fitted from",
    )
    return Table(header, tuple(rows))


def _deployment_table(rows: Sequence[DeploymentRow]) -> Table:
    header = ("scenario", "hardware", "replicas", "cost/month", "basis", "cheapest", "note")
    cells = []
    bold = set()
    for index, row in enumerate(rows):
        if row.cheapest:
            bold.add(index)
        cells.append(
            (
                row.scenario.label,
                row.hardware,
                "-" if row.replicas is None else str(row.replicas),
                _money(row.monthly_cost_usd),
                row.basis,
                "cheapest" if row.cheapest else "",
                row.note,
            )
        )
    return Table(header, tuple(cells), frozenset(bold))


def _verdict_bullets(deployments: Sequence[DeploymentRow]) -> tuple[str, ...]:
    """Per scenario, the cheapest option that meets the SLO, or that none does."""
    scenarios: dict[str, list[DeploymentRow]] = {}
    for row in deployments:
        scenarios.setdefault(row.scenario.label, []).append(row)
    bullets = []
    for label, rows in scenarios.items():
        cheapest = next((row for row in rows if row.cheapest), None)
        if cheapest is None:
            bullets.append(f"{label}: no hardware option meets the SLO")
            continue
        replicas = cheapest.replicas or 1
        plural = "" if replicas == 1 else "s"
        bullets.append(
            f"{label}: cheapest is {cheapest.hardware} with {replicas} replica{plural}, "
            f"{_money(cheapest.monthly_cost_usd)}/month ({cheapest.basis})"
        )
    return tuple(bullets)


def _verdict_blocks(
    experiment: controller_pb2.Experiment, trials: Sequence[TrialReport], deployments: Sequence[DeploymentRow]
) -> list[Block]:
    slo = experiment.spec.slo
    measured = [trial for trial in trials if trial.result.HasField("summary")]
    met = sum(1 for trial in measured if trial.result.slo_met)
    return [
        Heading(2, "Verdict"),
        Paragraph(
            f"Target: p{slo.percentile:g} <= {slo.latency_ms:g} ms at {slo.rate_per_s:g} requests/s "
            f"(latency from the intended send time). {met} of {len(trials)} trials met it in their hold "
            "phase."
        ),
        Bullets(_verdict_bullets(deployments)),
        Heading(3, "Deployment options (Table I)"),
        Paragraph(
            f"Per scenario (model x catalog size x runtime): each hardware option with the replica "
            f"count that meets p{slo.percentile:g} <= {slo.latency_ms:g} ms at {slo.rate_per_s:g} "
            "requests/s, and its monthly cost (replicas x monthly cost per replica); the cheapest is "
            "marked (bold). 'measured': the runner's hold-phase verdict met the SLO with that many "
            "replicas. 'extrapolated': ceil(required rate / highest per-replica SLO rate of the ramp), "
            "and at least one replica more than were measured missing it; this assumes replicas scale "
            "perfectly, which they do not quite (load balancing and shared network cost something). "
            "With repetitions, an option is measured as meeting the SLO only if every repetition "
            "did, and the lowest highest-SLO-rate is used."
        ),
        _deployment_table(deployments),
    ]


def _mean_split_table(trials: Sequence[TrialReport]) -> Table:
    header = (
        "trial",
        "OK answers",
        *(f"{part} mean ms" for part in SPLIT_PARTS),
        "sum of means",
        "mean latency",
        "untracked",
    )
    rows = []
    for trial in trials:
        split = trial.split
        if split is None:
            continue
        rows.append(
            (
                trial.trial_id,
                str(split.requests),
                *(_ms(split.mean_ms[part]) for part in SPLIT_PARTS),
                _ms(sum(split.mean_ms.values())),
                _ms(split.mean_total_ms),
                _ms(split.untracked_ms),
            )
        )
    return Table(header, tuple(rows))


def _trial_figure_blocks(trials: Sequence[TrialReport], figures: dict[str, str]) -> list[Block]:
    """Per trial: its ramp over time, its latency percentile distribution and its batch sizes."""
    blocks: list[Block] = []
    for trial in trials:
        ramp, distributions = f"ramp-{trial.trial_id}", f"distributions-{trial.trial_id}"
        if ramp not in figures and distributions not in figures:
            continue
        blocks.append(Heading(3, trial.trial_id))
        if ramp in figures:
            sampled = any(row.inference_cpu_cores is not None for row in trial.series)
            blocks.append(
                Image(
                    ramp,
                    f"{trial.trial_id}: latency percentiles of the requests sent in each tick (top), "
                    "target vs achieved rate (middle"
                    + ("; bottom: the inference service's CPU cores and resident memory" if sampled else "")
                    + "); the dotted line marks the tick that reached the highest SLO rate",
                )
            )
        if distributions in figures:
            blocks.append(
                Image(
                    distributions,
                    f"{trial.trial_id}: latency from intended send by percentile over the whole run "
                    "(x: 1/(1-p) on a log axis, HdrHistogram's percentile distribution), and the "
                    "batches that answered the OK requests by size",
                )
            )
    return blocks


def report_blocks(
    experiment: controller_pb2.Experiment,
    trials: Sequence[TrialReport],
    fitted: Sequence[FittedExponent],
    deployments: Sequence[DeploymentRow],
    figures: dict[str, str],
    replayed_log: ReplayedLog | None = None,
) -> list[Block]:
    """The report, most wanted first: the verdict and the cheapest option, then what was run,
    how each trial went, where the time went, the plots per trial, and the workload's fit."""
    spec = experiment.spec
    slo = spec.slo
    state = controller_pb2.ExperimentState.Name(experiment.state).removeprefix("EXPERIMENT_STATE_").lower()
    blocks: list[Block] = [
        Heading(1, f"Etude report: {experiment.experiment_id}"),
        Paragraph(
            f"State: {state}."
            + (f" {experiment.error}." if experiment.error else "")
            + f" Results: {experiment.results_uri}"
        ),
        *_verdict_blocks(experiment, trials, deployments),
        Heading(2, "Experiment"),
        Bullets(_spec_bullets(experiment, replayed_log)),
    ]
    if environment := environment_bullets(experiment.environment):
        blocks += [
            Heading(2, "Environment"),
            Paragraph(
                "The controller's versions and machine when the experiment was created; on the local"
                " target every service of every trial ran on this machine."
            ),
            Bullets(environment),
        ]
    if served := inference_environments(experiment):
        blocks.append(
            Paragraph(
                "The inference services' own environments, as each reported it when its trial"
                " deployed (on Kubernetes they ran on other machines than the controller):"
            )
        )
        for trial_ids, bullets in served:
            more = f" and {len(trial_ids) - 5} more" if len(trial_ids) > 5 else ""
            shown = ", ".join(trial_ids[:5]) + more
            blocks += [Heading(3, f"Inference service of {shown}"), Bullets(bullets)]
    blocks += [
        Heading(2, "Trials"),
        Paragraph(
            "Latencies are from the intended send time over the OK answers of the whole run (HDR "
            "histograms, 3 significant digits); ok/s = successful answers per second; not sent = "
            "requests the ramp called for that backpressure held back. 'SLO (hold)' is the runner's "
            "verdict on the hold phase; 'highest SLO rate/s' follows the stability rule below."
        ),
        _trial_table(experiment, trials),
        Bullets(_trial_notes(experiment, trials)),
        Paragraph(
            "Stability rule. " + STABILITY_RULE.format(percentile=slo.percentile, latency_ms=slo.latency_ms)
        ),
        *_search_blocks(trials),
        *distributed_blocks(trials),
        Heading(2, "Latency split"),
        Paragraph(
            "From the per-request server timing of the OK answers: send delay = actual - intended "
            "send (client late or backpressure); network and serialisation = latency from actual "
            "send - server total; server other = server total - queueing - inference. The parts "
            "of each request add up to its latency from intended send, so their means add up to "
            "the mean latency; 'untracked' is the difference, what clipping a part at zero (two "
            "processes' clocks) left out."
        ),
        _mean_split_table(trials),
    ]
    if "split" in figures:
        blocks.append(Image("split", "mean of each part of the latency, stacked, per trial"))
    blocks += [
        Paragraph(
            "Percentiles of each part, for the tails (percentiles of parts do not add up to the "
            "percentile of the whole):"
        ),
        _split_table(trials),
    ]
    blocks += _timing_blocks(trials)
    blocks += _trace_split_blocks(trials)
    blocks.append(Heading(2, "Latency against offered rate"))
    rate_figures = [name for name in figures if name.startswith("rate-")]
    for name in rate_figures:
        blocks.append(
            Image(
                name,
                f"p{slo.percentile:g} of the OK answers sent in each ramp tick against the tick's "
                f"target rate ({int(name.removeprefix('rate-c')):,} items); colour = model, line style = "
                "hardware and runtime",
            )
        )
    if not rate_figures:
        blocks.append(Paragraph("No trial left records to plot."))
    blocks.append(Heading(2, "Each trial"))
    blocks += _trial_figure_blocks(trials, figures)
    blocks.append(Heading(2, "Workload: requested and fitted exponents"))
    if fitted and replayed_log is not None:
        blocks += [
            Paragraph(
                "Maximum-likelihood fits of the classic exponent alpha of floor(Pareto(alpha)) "
                "(etude.services.workload.generator.fit_power_law_exponent). 'expected alpha' is the "
                "replayed log's own, fitted on the whole log; 'fitted alpha' is fitted on what the "
                "trial that got furthest replayed: clicks per session in records.csv (sessions still "
                "being replayed when the run ended count as shorter) and the click counts of the items "
                "of those clicks, looked up in the log by session and click."
            ),
            _fit_table(fitted),
        ]
    elif fitted:
        blocks += [
            Paragraph(
                "Maximum-likelihood fits of the classic exponent alpha of floor(Pareto(alpha)) "
                "(etude.services.workload.generator.fit_power_law_exponent), values at the generator's "
                "caps read as censored (x_max). Session lengths are the clicks replayed per session "
                "in records.csv (sessions still being replayed when the run ended count as shorter). "
                "records.csv holds no item ids, so item popularity is fitted on the click counts "
                "regenerated from the seed (Algorithm 1, line 7: what the sessions sampled items "
                "from). 'expected alpha' is the requested exponent, or, for a scipy.stats.powerlaw "
                f"fit, the fit of {REFERENCE_DRAWS:,} draws (or C counts) of the requested "
                "distribution from an independent seed."
            ),
            _fit_table(fitted),
        ]
    else:
        blocks.append(Paragraph("No fit: no trial left records, or the workload is not synthetic."))
    return blocks
