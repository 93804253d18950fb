"""How `etude run`, `search`, `submit --wait` and `watch` end: exit codes a CI job can gate on.

0: every trial ran (and, with --fail-on-slo-miss, met its SLO); 1: a trial or the experiment
failed, was cancelled or interrupted; 2: invalid input (a spec, an id, an unreachable controller);
3: with --fail-on-slo-miss, every trial ran but at least one missed its SLO.
"""

from __future__ import annotations

from etude.v1 import controller_pb2, experiment_pb2

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_SLO_MISSED = 3


def experiment_exit_status(experiment: controller_pb2.Experiment, fail_on_slo_miss: bool = False) -> int:
    if experiment.state != controller_pb2.EXPERIMENT_STATE_SUCCEEDED:
        return EXIT_FAILED
    missed = [
        result
        for result in experiment.trials
        if result.state == experiment_pb2.TRIAL_STATE_SUCCEEDED and not result.slo_met
    ]
    return EXIT_SLO_MISSED if fail_on_slo_miss and missed else EXIT_SUCCEEDED
