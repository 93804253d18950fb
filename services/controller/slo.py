"""Did a trial meet its service-level objective?

Judged on the hold phase (the seconds at the target rate; the whole run when there is no hold),
from the raw per-request records rather than the summary's fixed percentiles, so any
percentile can be asked for. Latency is measured from the intended send time, and a request
that failed counts as infinitely slow: an error never helps a trial pass.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from etude.v1 import experiment_pb2, loadgen_pb2

from ..loadgen.records import RECORDS_FILE

# The hold phase must deliver this share of the required rate (the loadgen's own tolerance).
RATE_TOLERANCE = 0.02


def hold_phase_latencies_ms(records_path: Path, first_hold_tick: int) -> np.ndarray:
    """Latency from intended send (ms) of every request sent in the hold phase; inf for failures."""
    latencies = []
    with records_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["tick"]) < first_hold_tick:
                continue
            if row["status"] == "OK":
                latencies.append(int(row["latency_from_intended_us"]) / 1000.0)
            else:
                latencies.append(math.inf)
    return np.asarray(latencies, dtype=np.float64)


def evaluate_slo(
    spec: experiment_pb2.ExperimentSpec, summary: loadgen_pb2.LoadSummary, records_dir: Path
) -> tuple[bool, str]:
    """(met, verdict in words) for a resolved spec and the trial's summary and records."""
    slo, load = spec.slo, spec.load
    first_hold_tick = load.ramp_duration_s if load.hold_duration_s > 0 else 0
    phase = "hold phase" if load.hold_duration_s > 0 else "whole run"
    latencies = hold_phase_latencies_ms(Path(records_dir) / RECORDS_FILE, first_hold_tick)
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
