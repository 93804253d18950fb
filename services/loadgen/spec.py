"""Checks a LoadSpec before a run and resolves its defaults (timeout 1,000 ms, k 21, transport h2).

Raises `InvalidLoadSpec` naming the offending field and the allowed range; the servicer turns
it into INVALID_ARGUMENT.
"""

from __future__ import annotations

import math

from etude import defaults
from etude.limits import LOAD_SPEC_LIMITS, LimitExceeded, check_limits
from etude.v1 import loadgen_pb2, workload_pb2

DEFAULT_REQUEST_TIMEOUT_MS = defaults.REQUEST_TIMEOUT_MS
DEFAULT_K = defaults.TOP_K
DEFAULT_TRANSPORT = defaults.LOADGEN_TRANSPORT
TRANSPORTS = ("unary", "stream", "h2")


class InvalidLoadSpec(ValueError):
    """A LoadSpec field outside its allowed range."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def request_timeout_s(profile: loadgen_pb2.LoadProfile) -> float:
    """The per-request deadline in seconds (0 in the spec means the default)."""
    return (profile.request_timeout_ms or DEFAULT_REQUEST_TIMEOUT_MS) / 1000.0


def items_per_recommendation(profile: loadgen_pb2.LoadProfile) -> int:
    """k for each request (0 in the spec means the default)."""
    return profile.k or DEFAULT_K


def transport(spec: loadgen_pb2.LoadSpec) -> str:
    """How the requests travel ("" in the spec means the default, h2)."""
    return spec.transport or DEFAULT_TRANSPORT


def validate_profile(profile: loadgen_pb2.LoadProfile, prefix: str = "profile.") -> None:
    """Raises InvalidLoadSpec for the first profile field outside its range."""
    rate = profile.target_rate_per_s
    if not math.isfinite(rate) or rate <= 0:
        raise InvalidLoadSpec(f"{prefix}target_rate_per_s", f"must be a finite number > 0, got {rate}")
    if profile.ramp_duration_s < 0:
        raise InvalidLoadSpec(f"{prefix}ramp_duration_s", f"must be >= 0, got {profile.ramp_duration_s}")
    if profile.hold_duration_s < 0:
        raise InvalidLoadSpec(f"{prefix}hold_duration_s", f"must be >= 0, got {profile.hold_duration_s}")
    if profile.ramp_duration_s + profile.hold_duration_s == 0:
        raise InvalidLoadSpec(
            f"{prefix}hold_duration_s", "ramp_duration_s + hold_duration_s must be >= 1, got 0"
        )
    if profile.request_timeout_ms < 0:
        raise InvalidLoadSpec(
            f"{prefix}request_timeout_ms",
            f"must be >= 0 (0 means {DEFAULT_REQUEST_TIMEOUT_MS}), got {profile.request_timeout_ms}",
        )
    if profile.k < 0:
        raise InvalidLoadSpec(f"{prefix}k", f"must be >= 0 (0 means {DEFAULT_K}), got {profile.k}")
    if profile.candidates_per_request < 0:
        raise InvalidLoadSpec(
            f"{prefix}candidates_per_request",
            f"must be >= 0 (0 scores the full catalog), got {profile.candidates_per_request}",
        )


def validate_candidates(spec: loadgen_pb2.LoadSpec) -> None:
    """A re-ranking load needs a synthetic workload (its popularity table is what candidates are
    drawn from) with at least that many items."""
    count = spec.profile.candidates_per_request
    if count == 0:
        return
    field = "profile.candidates_per_request"
    if spec.workload.HasField("replay"):
        raise InvalidLoadSpec(
            field, "needs a synthetic workload: a replayed log's item popularity is not known to the loadgen"
        )
    if count > spec.workload.catalog_size:
        raise InvalidLoadSpec(
            field, f"{count:,} is more than workload.catalog_size = {spec.workload.catalog_size:,} items"
        )


def validate_workload(workload: workload_pb2.WorkloadSpec, prefix: str = "workload.") -> None:
    """Raises InvalidLoadSpec for a workload the in-process generator cannot produce."""
    if workload.catalog_size < 1:
        raise InvalidLoadSpec(f"{prefix}catalog_size", f"must be >= 1, got {workload.catalog_size}")
    if workload.HasField("powerlaw_fits"):
        for name in ("session_lengths", "click_counts"):
            fit = getattr(workload.powerlaw_fits, name)
            field = f"{prefix}powerlaw_fits.{name}"
            if not (math.isfinite(fit.a) and fit.a > 0 and math.isfinite(fit.scale) and fit.scale > 0):
                raise InvalidLoadSpec(field, f"a and scale must be > 0, got a {fit.a}, scale {fit.scale}")
            if not (math.isfinite(fit.loc) and fit.loc + fit.scale >= 1):
                raise InvalidLoadSpec(f"{field}.loc", f"loc + scale must be >= 1, got loc {fit.loc}")
    else:
        for name in ("alpha_length", "alpha_clicks"):
            value = getattr(workload.exponents, name)
            if not math.isfinite(value) or value <= 1:
                raise InvalidLoadSpec(f"{prefix}exponents.{name}", f"must be > 1, got {value}")
    if workload.total_clicks < 0:
        raise InvalidLoadSpec(
            f"{prefix}total_clicks",
            f"must be >= 0 (0 means unlimited), got {workload.total_clicks}",
        )
    if workload.max_session_length < 0:
        raise InvalidLoadSpec(
            f"{prefix}max_session_length",
            f"must be >= 0 (0 means 50), got {workload.max_session_length}",
        )
    if workload.sessions_per_batch < 0:
        raise InvalidLoadSpec(
            f"{prefix}sessions_per_batch",
            f"must be >= 0 (0 means 1,024), got {workload.sessions_per_batch}",
        )


def validate_load_spec(spec: loadgen_pb2.LoadSpec) -> None:
    """Raises InvalidLoadSpec for the first LoadSpec field outside its allowed range."""
    if not spec.target.strip():
        raise InvalidLoadSpec("target", "must be host:port of a RecommenderService, got ''")
    if not spec.HasField("profile"):
        raise InvalidLoadSpec("profile", "is required (target_rate_per_s and durations)")
    validate_profile(spec.profile)
    try:
        # Upper bounds: a run of 2^31 s would build a list with one entry per second.
        check_limits(spec, LOAD_SPEC_LIMITS)
    except LimitExceeded as error:
        raise InvalidLoadSpec(error.field, error.reason) from None
    if spec.transport and spec.transport not in TRANSPORTS:
        raise InvalidLoadSpec(
            "transport", f"must be one of {', '.join(TRANSPORTS)} (or empty), got {spec.transport!r}"
        )
    validate_candidates(spec)
    if spec.workload_endpoint:
        # The workload service validates its own spec and answers INVALID_ARGUMENT itself.
        return
    if not spec.HasField("workload"):
        raise InvalidLoadSpec("workload", "is required when workload_endpoint is empty")
    validate_workload(spec.workload)
