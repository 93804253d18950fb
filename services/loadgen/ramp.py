"""The load profile as a list of one-second ticks: a linear ramp to the target rate, then a hold.

Tick 0 already carries `target / ramp_duration_s` (not 0): a tick at rate 0 would send nothing
and only waste a second, and starting at one step up makes the last ramp tick land exactly on
the target. Ticks: `ramp_duration_s + hold_duration_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tick:
    """One second of the profile: the rate it aims for and the whole requests that means."""

    index: int
    rate_per_s: float
    # Whole requests to send in this tick. Fractional rates carry over through the cumulative
    # sum, so that the requests of all ticks add up to the rounded sum of the rates.
    requests: int
    in_hold: bool


def tick_rates(target_rate_per_s: float, ramp_duration_s: int, hold_duration_s: int) -> list[float]:
    """Rate of each tick: `target * (i + 1) / ramp` while ramping, then `target`."""
    if not math.isfinite(target_rate_per_s) or target_rate_per_s <= 0:
        raise ValueError(f"target_rate_per_s must be > 0, got {target_rate_per_s}")
    if ramp_duration_s < 0 or hold_duration_s < 0:
        raise ValueError(f"durations must be >= 0, got ramp {ramp_duration_s} s and hold {hold_duration_s} s")
    if ramp_duration_s + hold_duration_s == 0:
        raise ValueError("ramp_duration_s + hold_duration_s must be >= 1")
    ramp = [target_rate_per_s * (i + 1) / ramp_duration_s for i in range(ramp_duration_s)]
    return ramp + [target_rate_per_s] * hold_duration_s


def ramp_ticks(target_rate_per_s: float, ramp_duration_s: int, hold_duration_s: int) -> list[Tick]:
    """The ticks of a profile, with each tick's rate rounded to whole requests without drift."""
    rates = tick_rates(target_rate_per_s, ramp_duration_s, hold_duration_s)
    ticks: list[Tick] = []
    cumulative_rate = 0.0
    cumulative_requests = 0
    for index, rate in enumerate(rates):
        cumulative_rate += rate
        # round() on the running total: 0.5 req/s sends one request every other tick.
        total = round(cumulative_rate)
        ticks.append(Tick(index, rate, total - cumulative_requests, index >= ramp_duration_s))
        cumulative_requests = total
    return ticks
