"""The sessions one trial of an experiment replays: the spec's statistics at the trial's catalog
size, or its click log (the controller asks the workload service for them; the report
regenerates or re-reads them to fit)."""

from __future__ import annotations

from etude.v1 import experiment_pb2, workload_pb2

REPLAY = "replay"


def replay_source(stats: experiment_pb2.WorkloadStats) -> workload_pb2.ReplaySource:
    """The click log a spec's workload section names, as the workload service reads it."""
    return workload_pb2.ReplaySource(
        path=stats.path,
        session_column=stats.session_column,
        item_column=stats.item_column,
        timestamp_column=stats.timestamp_column,
        no_header=stats.no_header,
    )


def log_speedup(stats: experiment_pb2.WorkloadStats) -> float:
    """LoadSpec.log_speedup of a spec's workload: its speedup (0 means 1) when a replay is paced
    by the log's time, else 0 (the load profile's ramp)."""
    if stats.source == REPLAY and stats.pace == "log":
        return stats.speedup or 1.0
    return 0.0


def workload_spec(
    trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec
) -> workload_pb2.WorkloadSpec:
    """The WorkloadSpec of a trial of a resolved spec (a replay: the whole log, part 0 of 1;
    the runner names each load generator's part)."""
    workload = workload_pb2.WorkloadSpec(
        catalog_size=trial.catalog_size,
        seed=spec.workload.seed,
        max_session_length=spec.workload.max_session_length,
    )
    if spec.workload.source == REPLAY:
        workload.replay.CopyFrom(replay_source(spec.workload))
    elif spec.workload.HasField("powerlaw_fits"):  # also a preset, once resolved
        workload.powerlaw_fits.CopyFrom(spec.workload.powerlaw_fits)
    else:
        workload.exponents.CopyFrom(spec.workload.exponents)
    return workload
