"""The ramp: one rate per one-second tick, linear up to the target, then the hold."""

from __future__ import annotations

import itertools
import math

import pytest
from etude.services.loadgen.ramp import ramp_ticks, tick_rates
from hypothesis import given
from hypothesis import strategies as st


def test_ramp_starts_one_step_up_and_reaches_the_target_on_its_last_tick() -> None:
    assert tick_rates(100.0, 4, 2) == [25.0, 50.0, 75.0, 100.0, 100.0, 100.0]


def test_no_ramp_holds_the_target_from_tick_zero() -> None:
    assert tick_rates(10.0, 0, 3) == [10.0, 10.0, 10.0]


def test_ramp_only_profile_ends_on_the_target() -> None:
    ticks = ramp_ticks(30.0, 3, 0)
    assert [tick.requests for tick in ticks] == [10, 20, 30]
    assert not any(tick.in_hold for tick in ticks)


def test_hold_ticks_are_flagged_as_hold() -> None:
    assert [tick.in_hold for tick in ramp_ticks(5.0, 2, 2)] == [False, False, True, True]


def test_fractional_rates_carry_over_instead_of_rounding_away() -> None:
    # 0.5 requests per second: one request every other second, not zero and not one a second.
    assert sum(tick.requests for tick in ramp_ticks(0.5, 0, 10)) == 5


@pytest.mark.parametrize(
    ("rate", "ramp", "hold"),
    [
        (0.0, 1, 1),
        (-1.0, 1, 1),
        (math.nan, 1, 1),
        (math.inf, 1, 1),
        (1.0, -1, 1),
        (1.0, 1, -1),
        (1.0, 0, 0),
    ],
)
def test_invalid_profiles_are_rejected(rate: float, ramp: int, hold: int) -> None:
    with pytest.raises(ValueError):
        tick_rates(rate, ramp, hold)


@given(
    rate=st.floats(min_value=0.01, max_value=100_000, allow_nan=False),
    ramp=st.integers(min_value=0, max_value=120),
    hold=st.integers(min_value=0, max_value=120),
)
def test_ticks_add_up_to_the_offered_load(rate: float, ramp: int, hold: int) -> None:
    if ramp + hold == 0:
        return
    ticks = ramp_ticks(rate, ramp, hold)
    rates = [tick.rate_per_s for tick in ticks]
    assert len(ticks) == ramp + hold
    assert [tick.index for tick in ticks] == list(range(ramp + hold))
    assert rates[-1] == pytest.approx(rate)
    assert all(a <= b * (1 + 1e-12) for a, b in itertools.pairwise(rates))
    assert sum(tick.requests for tick in ticks) == round(sum(rates))
    assert all(math.floor(t.rate_per_s) - 1 <= t.requests <= math.ceil(t.rate_per_s) + 1 for t in ticks)
