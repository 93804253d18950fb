"""ListExperiments: the controller's experiments, newest first, a page of short summaries at a time.

A page token names the position after the last experiment returned (its creation time and id),
not an offset: experiments submitted while a client pages through land before its position, so
no page repeats or skips one. Summaries are bounded in size, unlike a whole experiment with every
trial's results.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from etude import defaults
from etude.limits import MAX_PAGE_SIZE
from etude.v1 import controller_pb2, experiment_pb2

State = experiment_pb2.TrialState
_TOKEN_PREFIX = "v1:"


class InvalidPage(ValueError):
    """A page_size out of range or a page_token this controller did not issue; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def experiment_summary(experiment: controller_pb2.Experiment) -> controller_pb2.ExperimentSummary:
    """What a listing shows of `experiment` (the cheapest SLO-meeting trial among priced options)."""
    summary = controller_pb2.ExperimentSummary(
        experiment_id=experiment.experiment_id,
        name=experiment.spec.name,
        state=experiment.state,
        created_unix_ms=experiment.created_unix_ms,
        finished_unix_ms=experiment.finished_unix_ms,
        trials=len(experiment.trials),
        trials_measured=sum(result.HasField("summary") for result in experiment.trials),
        trials_slo_met=sum(result.slo_met for result in experiment.trials),
        trials_failed=sum(result.state == State.TRIAL_STATE_FAILED for result in experiment.trials),
        error=experiment.error,
        results_uri=experiment.results_uri,
    )
    priced = [
        (_monthly_cost_usd(result.trial.hardware), result.trial)
        for result in experiment.trials
        if result.slo_met and result.trial.hardware.monthly_cost_usd > 0
    ]
    if priced:
        cost, trial = min(priced, key=lambda entry: entry[0])
        summary.cheapest_trial_id = trial.trial_id
        summary.cheapest_hardware = trial.hardware.name
        summary.cheapest_monthly_cost_usd = cost
    return summary


def _monthly_cost_usd(hardware: experiment_pb2.HardwareOption) -> float:
    return hardware.monthly_cost_usd * max(1, hardware.replicas)


def _position(experiment: controller_pb2.Experiment) -> tuple[int, str]:
    return experiment.created_unix_ms, experiment.experiment_id


def page_of(
    experiments: Iterable[controller_pb2.Experiment], page_size: int, page_token: str
) -> controller_pb2.ListExperimentsResponse:
    """One page, newest first, of at most `page_size` summaries (0: the default) after the position
    in `page_token` (empty: from the newest); raises InvalidPage naming the bad field."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidPage(
            "page_size", f"{page_size} must be in [0, {MAX_PAGE_SIZE:,}] (0 means {defaults.LIST_PAGE_SIZE})"
        )
    size = page_size or defaults.LIST_PAGE_SIZE
    ordered = sorted(experiments, key=_position, reverse=True)
    if page_token:
        after = _decode(page_token)
        ordered = [experiment for experiment in ordered if _position(experiment) < after]
    page = ordered[:size]
    response = controller_pb2.ListExperimentsResponse(
        experiments=[experiment_summary(experiment) for experiment in page]
    )
    if len(ordered) > size:
        response.next_page_token = _encode(_position(page[-1]))
    return response


def _encode(position: tuple[int, str]) -> str:
    created_unix_ms, experiment_id = position
    text = f"{_TOKEN_PREFIX}{created_unix_ms}:{experiment_id}"
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode(token: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode()
        if not text.startswith(_TOKEN_PREFIX):
            raise ValueError(text)
        created, experiment_id = text.removeprefix(_TOKEN_PREFIX).split(":", 1)
        return int(created), experiment_id
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidPage(
            "page_token", "not a next_page_token of this controller (leave it empty for the first page)"
        ) from None
