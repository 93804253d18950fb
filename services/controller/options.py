"""What a trial asks of the inference service, as option names shared by every driver.

The local driver turns them into flags (`--catalog-size 10000`), the Kubernetes driver into
environment variables (`ETUDE_CATALOG_SIZE=10000`): `etude serve inference` accepts both.
"""

from __future__ import annotations

from etude import defaults
from etude.v1 import experiment_pb2


def inference_options(trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec) -> dict[str, str]:
    """Options of `etude serve inference` for one trial of a resolved spec."""
    # A team's model file is served instead of a named model; its table fixes the width.
    model = (
        {"model_path": trial.model.model_path}
        if trial.model.model_path
        else {"model": trial.model.name, "embedding_dim": str(trial.embedding_dim)}
    )
    options = {
        **model,
        "catalog_size": str(trial.catalog_size),
        "device": trial.hardware.device,
        "runtime": trial.runtime,
        "max_batch_size": str(spec.batching.max_batch_size),
        "max_batch_delay_ms": str(spec.batching.max_batch_delay_ms),
        "max_queue_size": str(spec.batching.max_queue_size),
        "seed": str(spec.workload.seed),
    }
    if trial.hardware.cpu_threads:
        options["threads"] = str(trial.hardware.cpu_threads)
    if trial.hardware.executors:
        options["executors"] = str(trial.hardware.executors)
    # A router encodes in fp32; its shards score in the trial's precision (shard_options).
    if trial.precision and trial.precision != defaults.PRECISION and trial.hardware.catalog_shards < 2:
        options["precision"] = trial.precision
        # Accuracy mode replays the experiment's own kind of sessions (its seed, its exponents).
        options["accuracy_seed"] = str(spec.workload.seed)
        if spec.workload.HasField("exponents"):
            options["accuracy_alpha_length"] = str(spec.workload.exponents.alpha_length)
            options["accuracy_alpha_clicks"] = str(spec.workload.exponents.alpha_clicks)
    return options


def shard_options(
    trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec, shard_index: int
) -> dict[str, str]:
    """Options of `etude serve shard` for shard `shard_index` of a sharded trial: the router's
    model, catalog and seed (the item rows must match), its part, and the layout."""
    hardware = trial.hardware
    options = {
        "model": trial.model.name,
        "embedding_dim": str(trial.embedding_dim),
        "catalog_size": str(trial.catalog_size),
        "seed": str(spec.workload.seed),
        "shard": f"{shard_index}/{hardware.catalog_shards}",
        "strategy": hardware.shard_strategy or "range",
    }
    if trial.precision and trial.precision != defaults.PRECISION:
        options["precision"] = trial.precision
    if hardware.cpu_threads:
        options["threads"] = str(hardware.cpu_threads)
    if hardware.shard_strategy == "popular":
        # The hot items are the experiment workload's most clicked ones.
        options["popularity_seed"] = str(spec.workload.seed)
        options["popularity_alpha_clicks"] = str(spec.workload.exponents.alpha_clicks)
    return options


def as_flags(options: dict[str, str]) -> list[str]:
    flags = []
    for name, value in options.items():
        flags += ["--" + name.replace("_", "-"), value]
    return flags
