"""Expands an experiment's matrix (models x catalog sizes x hardware x runtimes x precisions x
repetitions) into trials, and says how long their load takes."""

from __future__ import annotations

import itertools

from etude import defaults
from etude.v1 import controller_pb2, experiment_pb2

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


def load_runs_per_trial(spec: experiment_pb2.ExperimentSpec) -> int:
    """Ramps each trial runs: one, or a search's probes at most."""
    return spec.search.max_probes if spec.HasField("search") else 1


def estimated_load_s(spec: experiment_pb2.ExperimentSpec) -> int:
    """Seconds of load of a resolved spec: trials x (ramp + hold), times the probes of a search
    (its upper bound). Deployments' start-up is not in it (seconds at small catalogs, minutes at
    tens of millions of items)."""
    load = spec.load
    runs = len(expand_trials(spec)) * load_runs_per_trial(spec)
    return runs * (load.ramp_duration_s + load.hold_duration_s)


def validated_experiment(spec: experiment_pb2.ExperimentSpec) -> controller_pb2.Experiment:
    """What a resolved spec would run, created nowhere: the answer to a validate-only submission."""
    experiment = controller_pb2.Experiment(
        state=controller_pb2.EXPERIMENT_STATE_VALIDATED,
        spec=spec,
        estimated_load_s=estimated_load_s(spec),
    )
    for trial in expand_trials(spec):
        experiment.trials.add(trial=trial, state=experiment_pb2.TRIAL_STATE_PENDING)
    return experiment
