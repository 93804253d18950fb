"""Expands an experiment's matrix (models x catalog sizes x hardware x runtimes x precisions x
repetitions) into trials."""

from __future__ import annotations

import itertools

from etude import defaults
from etude.v1 import experiment_pb2

from ..inference.options import resolve_embedding_dim


def expand_trials(spec: experiment_pb2.ExperimentSpec) -> list[experiment_pb2.Trial]:
    """The trials of a resolved spec, in the order they run (catalog sizes vary slowest)."""
    trials = []
    for catalog_size, model, hardware, runtime, precision, repetition in itertools.product(
        spec.catalog_sizes,
        spec.models,
        spec.hardware,
        spec.runtimes,
        spec.precisions or [defaults.PRECISION],
        range(1, spec.repetitions + 1),
    ):
        embedding_dim = resolve_embedding_dim(catalog_size, model.embedding_dim, spec.embedding_policy)
        trial_id = f"{model.name}-c{catalog_size}-{hardware.name}-{runtime}"
        # fp32 ids stay as they were before precision became an axis.
        if precision != defaults.PRECISION:
            trial_id += f"-{precision}"
        if spec.repetitions > 1:
            trial_id += f"-r{repetition}"
        trials.append(
            experiment_pb2.Trial(
                trial_id=trial_id,
                model=model,
                catalog_size=catalog_size,
                embedding_dim=embedding_dim,
                hardware=hardware,
                runtime=runtime,
                precision=precision,
                repetition=repetition,
            )
        )
    return trials
