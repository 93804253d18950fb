"""What the report says of the conditions of a measurement: the environment that produced it, a
reduced precision's accuracy, and the load generator's own footprint (a perturbed run is named
as such, never mistaken for the server's latency)."""

from __future__ import annotations

from etude import defaults
from etude.provenance import COMPARED_FIELDS
from etude.v1 import controller_pb2, environment_pb2, experiment_pb2


def environment_bullets(
    environment: environment_pb2.Environment, process: str = "the controller's process"
) -> tuple[str, ...]:
    """What produced the results, as `process` saw itself (empty for results that predate it)."""
    if not environment.etude_version:
        return ()
    e = environment
    gpu = (
        f"{environment.gpu_name} ({environment.gpu_memory_bytes / 2**30:,.0f} GiB, driver"
        f" {environment.gpu_driver_version or '?'}, CUDA {environment.cuda_version or '?'})"
        if environment.gpu_name
        else f"none used by {process}"
    )
    return (
        f"Etude {environment.etude_version}"
        + (f" at {environment.git_commit}" if environment.git_commit else ""),
        f"Python {e.python_version}, torch {e.torch_version}, grpcio {e.grpcio_version},"
        f" protobuf {e.protobuf_version}, numpy {e.numpy_version}",
        f"CPU: {e.cpu_model}, {e.cpu_cores_usable} of {e.cpu_cores} cores usable,"
        f" {e.memory_bytes / 2**30:,.1f} GiB memory",
        f"GPU: {gpu}",
        f"Host: {environment.host} ({environment.platform})"
        + (f", image {environment.image}" if environment.image else ""),
    )


def inference_environments(
    experiment: controller_pb2.Experiment,
) -> list[tuple[list[str], tuple[str, ...]]]:
    """The inference services' own environments, as each trial's service reported it: one entry
    per distinct environment (host aside: on Kubernetes every trial has pods of its own) with the
    trials it served, in trial order."""
    groups: dict[tuple[object, ...], tuple[list[str], environment_pb2.Environment]] = {}
    for result in experiment.trials:
        if not result.HasField("inference_environment"):
            continue
        environment = result.inference_environment
        key = tuple(getattr(environment, field) for field in COMPARED_FIELDS)
        groups.setdefault(key, ([], environment))[0].append(result.trial.trial_id)
    return [
        (trial_ids, environment_bullets(environment, "the inference service"))
        for trial_ids, environment in groups.values()
    ]


def precision_and_loadgen_notes(result: experiment_pb2.TrialResult) -> list[str]:
    """The accuracy of a reduced precision, a re-ranking load (candidates instead of the full
    catalog), and what the load generator itself cost: a loadgen over its core budget competed
    with the service for CPU, so its latencies are perturbed."""
    notes = []
    precision = result.trial.precision or defaults.PRECISION
    if precision != defaults.PRECISION:
        if result.recall_k:
            notes.append(
                f"{precision} scoring: recall@{result.recall_k} {result.recall_at_k:.4f} against fp32"
                f" exact scoring on {result.recall_sessions:,} workload sessions"
            )
        else:
            notes.append(f"{precision} scoring: no recall measured (the service was not reachable)")
    if result.HasField("summary") and result.summary.candidates_per_request:
        notes.append(
            f"re-ranking: each request scored {result.summary.candidates_per_request:,} candidates"
            " (drawn by item popularity, the session's next click among them), not the full catalog"
        )
    if result.HasField("summary") and result.summary.footprint.cpu_us_per_request:
        footprint, transport = (
            result.summary.footprint,
            result.summary.transport or defaults.LOADGEN_TRANSPORT,
        )
        text = (
            f"load generator ({transport}): {footprint.cpu_us_per_request:,.0f} us CPU per request,"
            f" {footprint.cores_used:.2f} cores, send lateness p99 {footprint.send_lateness.p99_ms:.2f} ms"
        )
        if footprint.over_core_budget:
            text = (
                f"WARNING: {text}, over its budget of {footprint.core_budget:g} core: it competed with"
                " the service for CPU, so these latencies include its perturbation (more"
                " loadgen_instances, or a load machine of its own)"
            )
        notes.append(text)
    return notes
