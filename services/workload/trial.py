"""The sessions one trial of an experiment replays: the spec's statistics at the trial's catalog
size (the controller asks the workload service for them; the report regenerates them to fit)."""

from __future__ import annotations

from etude.v1 import experiment_pb2, workload_pb2


def workload_spec(
    trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec
) -> workload_pb2.WorkloadSpec:
    """The WorkloadSpec of a trial of a resolved spec."""
    workload = workload_pb2.WorkloadSpec(catalog_size=trial.catalog_size, seed=spec.workload.seed)
    if spec.workload.HasField("powerlaw_fits"):  # also a preset, once resolved
        workload.powerlaw_fits.CopyFrom(spec.workload.powerlaw_fits)
    else:
        workload.exponents.CopyFrom(spec.workload.exponents)
    return workload
