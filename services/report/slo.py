"""Did a run meet its service-level objective?

Judged on the hold phase (the seconds at the target rate; the whole run when there is no hold),
from the raw per-request records rather than the summary's fixed percentiles, so any
percentile can be asked for. Latency is measured from the intended send time, and a request
that failed counts as infinitely slow: an error never helps a trial pass.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from etude.v1 import experiment_pb2, loadgen_pb2

from ..results.layout import RECORDS_FILE
from ..results.records import RecordColumns, read_records

# The hold phase must deliver this share of the required rate (the loadgen's own tolerance).
RATE_TOLERANCE = 0.02


def hold_phase_latencies_ms(records: RecordColumns, first_hold_tick: int) -> np.ndarray:
    """Latency from intended send (ms) of every request sent from `first_hold_tick` on; inf for
    failures."""
    in_hold = records.tick >= first_hold_tick
    latencies_ms = records.latency_from_intended_us[in_hold] / 1000.0
    return np.where(records.ok[in_hold], latencies_ms, math.inf)


def evaluate_slo(
    spec: experiment_pb2.ExperimentSpec, summary: loadgen_pb2.LoadSummary, records: RecordColumns
) -> tuple[bool, str]:
    """(met, verdict in words) for a resolved spec and a run's summary and records."""
    slo, load = spec.slo, spec.load
    first_hold_tick = load.ramp_duration_s if load.hold_duration_s > 0 else 0
    phase = "hold phase" if load.hold_duration_s > 0 else "whole run"
    latencies = hold_phase_latencies_ms(records, first_hold_tick)
    if latencies.size == 0:
        return False, f"no request was sent in the {phase}"
    observed_ms = float(np.percentile(latencies, slo.percentile, method="higher"))
    rate = summary.achieved_hold_rate_per_s if load.hold_duration_s > 0 else summary.achieved_rate_per_s
    latency_ok = observed_ms <= slo.latency_ms
    rate_ok = rate >= slo.rate_per_s * (1 - RATE_TOLERANCE)
    observed = "an error" if math.isinf(observed_ms) else f"{observed_ms:.2f} ms"
    verdict = (
        f"{phase}: p{slo.percentile:g} {observed} (bound {slo.latency_ms:g} ms"
        f"{'' if latency_ok else ', MISSED'}), {rate:.1f} successful answers/s "
        f"(required {slo.rate_per_s:g}{'' if rate_ok else ', MISSED'})"
    )
    return latency_ok and rate_ok, verdict


def evaluate_run(
    spec: experiment_pb2.ExperimentSpec, summary: loadgen_pb2.LoadSummary, run_folder: Path
) -> tuple[bool, str]:
    """evaluate_slo over the records.csv in `run_folder` (blocking: run it off the event loop)."""
    return evaluate_slo(spec, summary, read_records(run_folder / RECORDS_FILE))
