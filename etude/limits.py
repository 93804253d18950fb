"""Upper bounds, and finiteness, for every number a person or a caller can hand to Etude.

A spec or a request beyond them is refused up front with the field's path and its range, never
run until something runs out (a catalog of 10^12 items, an hour-long list per second, NaN as a
latency bound). The bounds are generous for real use and stated once here; the protos' comments
quote them. Zero keeps meaning "the default" wherever the proto says so: proto3 does not tell an
unset number from 0, so 0 is never checked against a bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


class LimitExceeded(ValueError):
    """A number outside its bound, or not finite; `field` is its path in the message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class Bound:
    """Values allowed for one field: low <= value <= high (low excluded when `low_open`)."""

    low: float
    high: float
    low_open: bool = False

    def admits(self, value: float) -> bool:
        above_low = value > self.low if self.low_open else value >= self.low
        return above_low and value <= self.high

    def describe(self) -> str:
        low = "(" if self.low_open else "["
        return f"must be in {low}{_number(self.low)}, {_number(self.high)}]"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


# The largest catalog Etude sizes a deployment for: 5x the paper's largest use case (20 million).
MAX_CATALOG_SIZE = 100_000_000
MAX_RATE_PER_S = 1_000_000.0
# A day: longer runs are several experiments.
MAX_DURATION_S = 86_400
MAX_REQUEST_TIMEOUT_MS = 600_000
MAX_K = 10_000
# Candidates one re-ranking request may carry (RecommendRequest.candidate_ids): what a retrieval
# stage hands a ranker (hundreds to a few thousand), with headroom; 10,000 ids are ~60 KiB.
MAX_CANDIDATES = 10_000
# Clicks of one session a request may carry (the models read the last 50).
MAX_SESSION_ITEMS = 1_000
# How many times faster than its own time a click log may be replayed (pace "log").
MAX_LOG_SPEEDUP = 1_000_000.0
MAX_SESSION_ID_CHARS = 256
# Trials of one experiment (models x catalogs x hardware x runtimes x repetitions): a larger
# matrix would take weeks and its experiment.json would outgrow gRPC's message limits.
MAX_TRIALS = 1_000
MAX_LIST_ENTRIES = 64
# Experiments on one page of ControllerService.ListExperiments.
MAX_PAGE_SIZE = 1_000

# The largest request each service accepts, in bytes: what its largest valid request needs, with
# headroom (a Recommend of 1,000 clicks is about 10 KiB; an experiment spec a few KiB). Anything
# bigger is refused by gRPC itself (RESOURCE_EXHAUSTED) before it takes memory.
MAX_REQUEST_BYTES = {
    "etude.v1.RecommenderService": 1 << 20,
    "etude.v1.WorkloadService": 64 << 10,
    "etude.v1.LoadGeneratorService": 256 << 10,
    "etude.v1.ControllerService": 4 << 20,
    # A router's Score: 4,096 session representations of up to 1,024 fp32 values.
    "etude.v1.ShardService": 16 << 20,
}
DEFAULT_MAX_REQUEST_BYTES = 4 << 20

POWER_LAW_EXPONENT = Bound(1.0, 100.0, low_open=True)
_POWERLAW_FIT = {
    "a": Bound(0.0, 1_000.0, low_open=True),
    "loc": Bound(-1e12, 1e12),
    "scale": Bound(0.0, 1e12, low_open=True),
}


def _fits(prefix: str) -> dict[str, Bound]:
    return {
        f"{prefix}.{distribution}.{name}": bound
        for distribution in ("session_lengths", "click_counts")
        for name, bound in _POWERLAW_FIT.items()
    }


def _workload(prefix: str) -> dict[str, Bound]:
    return {
        f"{prefix}catalog_size": Bound(1, MAX_CATALOG_SIZE),
        f"{prefix}exponents.alpha_length": POWER_LAW_EXPONENT,
        f"{prefix}exponents.alpha_clicks": POWER_LAW_EXPONENT,
        **_fits(f"{prefix}powerlaw_fits"),
        f"{prefix}total_clicks": Bound(0, 1e12),
        f"{prefix}max_session_length": Bound(1, MAX_SESSION_ITEMS),
        f"{prefix}sessions_per_batch": Bound(1, 100_000),
        f"{prefix}session_partition": Bound(0, 1_000_000),
        f"{prefix}session_partition_count": Bound(1, 1_000_000),
    }


def _load_profile(prefix: str) -> dict[str, Bound]:
    return {
        f"{prefix}target_rate_per_s": Bound(0.0, MAX_RATE_PER_S, low_open=True),
        f"{prefix}ramp_duration_s": Bound(0, MAX_DURATION_S),
        f"{prefix}hold_duration_s": Bound(0, MAX_DURATION_S),
        f"{prefix}request_timeout_ms": Bound(1, MAX_REQUEST_TIMEOUT_MS),
        f"{prefix}k": Bound(1, MAX_K),
        f"{prefix}candidates_per_request": Bound(0, MAX_CANDIDATES),
    }


# etude.v1.ExperimentSpec; "[]" stands for every element of a repeated field.
SPEC_LIMITS: Mapping[str, Bound] = {
    "models[].embedding_dim": Bound(1, 4_096),
    "catalog_sizes[]": Bound(1, MAX_CATALOG_SIZE),
    "workload.exponents.alpha_length": POWER_LAW_EXPONENT,
    "workload.exponents.alpha_clicks": POWER_LAW_EXPONENT,
    **_fits("workload.powerlaw_fits"),
    "workload.speedup": Bound(0.0, MAX_LOG_SPEEDUP, low_open=True),
    "workload.max_session_length": Bound(1, MAX_SESSION_ITEMS),
    "hardware[].monthly_cost_usd": Bound(0.0, 10_000_000.0),
    "hardware[].replicas": Bound(1, 1_000),
    "hardware[].cpu_threads": Bound(1, 1_024),
    "hardware[].executors": Bound(1, 64),
    "hardware[].catalog_shards": Bound(1, 64),
    "batching.max_batch_size": Bound(1, 65_536),
    "batching.max_batch_delay_ms": Bound(0.0, 10_000.0),
    "batching.max_queue_size": Bound(1, 10_000_000),
    **_load_profile("load."),
    "slo.percentile": Bound(0.0, 100.0, low_open=True),
    "slo.latency_ms": Bound(0.0, 3_600_000.0, low_open=True),
    "slo.rate_per_s": Bound(0.0, MAX_RATE_PER_S, low_open=True),
    "repetitions": Bound(1, 100),
    "loadgen_instances": Bound(1, 64),
    "search.start_rate_per_s": Bound(0.0, MAX_RATE_PER_S, low_open=True),
    "search.max_rate_per_s": Bound(0.0, MAX_RATE_PER_S, low_open=True),
    "search.precision": Bound(0.0, 0.5, low_open=True),
    "search.max_probes": Bound(1, 100),
}

# etude.v1.LoadSpec, as LoadGeneratorService.Run takes it.
LOAD_SPEC_LIMITS: Mapping[str, Bound] = {
    **_load_profile("profile."),
    **_workload("workload."),
    "log_speedup": Bound(0.0, MAX_LOG_SPEEDUP, low_open=True),
}

# etude.v1.WorkloadSpec, as WorkloadService.StreamSessions takes it.
WORKLOAD_SPEC_LIMITS: Mapping[str, Bound] = _workload("")


def check_limits(
    message: Message, limits: Mapping[str, Bound], *, max_list_entries: int = MAX_LIST_ENTRIES
) -> None:
    """Raises LimitExceeded for the first number of `message` outside its bound in `limits`, for
    any float that is NaN or infinite (bounded or not), and for a repeated number field with more
    than `max_list_entries` entries."""
    _check(message, limits, "", "", max_list_entries)


def _check(message: Message, limits: Mapping[str, Bound], path: str, pattern: str, max_entries: int) -> None:
    for field, value in message.ListFields():
        field_path, field_pattern = f"{path}{field.name}", f"{pattern}{field.name}"
        if field.is_repeated and not _is_map(field):
            if field.type != FieldDescriptor.TYPE_MESSAGE and len(value) > max_entries:
                raise LimitExceeded(field_path, f"{len(value)} entries; at most {max_entries}")
            for index, element in enumerate(value):
                _check_value(
                    field, element, limits, f"{field_path}[{index}]", f"{field_pattern}[]", max_entries
                )
        elif not _is_map(field):
            _check_value(field, value, limits, field_path, field_pattern, max_entries)


def _check_value(
    field: FieldDescriptor,
    value: object,
    limits: Mapping[str, Bound],
    path: str,
    pattern: str,
    max_entries: int,
) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert isinstance(value, Message)
        _check(value, limits, f"{path}.", f"{pattern}.", max_entries)
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise LimitExceeded(path, f"{value} is not a finite number")
    bound = limits.get(pattern)
    if bound is not None and value != 0 and not bound.admits(value):
        raise LimitExceeded(path, f"{_number(value)} {bound.describe()}")


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def trial_count(*axis_lengths: int) -> int:
    """The size of an experiment's matrix from its axes' lengths (models, catalog sizes, hardware,
    runtimes, ..., repetitions); an empty axis counts 1 (its default)."""
    return math.prod(max(1, length) for length in axis_lengths)
