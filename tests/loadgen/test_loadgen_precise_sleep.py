"""Sleeping to an exact perf_counter_ns inside asyncio (a timerfd on Linux): never early, many
sleeps on one timer, cancellation leaves it usable, close releases it."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from etude.services.loadgen.precise_sleep import PreciseSleeper

# On asyncio's loop and on uvloop's (tests/loadgen/conftest.py).
ON_EVERY_EVENT_LOOP = True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
def test_on_linux_the_sleeper_holds_a_timerfd_and_close_releases_it() -> None:
    sleeper = PreciseSleeper()
    assert sleeper.precise
    descriptor = sleeper._fd
    assert os.readlink(f"/proc/self/fd/{descriptor}") == "anon_inode:[timerfd]"
    sleeper.close()
    assert not sleeper.precise
    assert not os.path.exists(f"/proc/self/fd/{descriptor}") or (
        os.readlink(f"/proc/self/fd/{descriptor}") != "anon_inode:[timerfd]"
    )


@pytest.mark.parametrize("precise", [True, False], ids=["timerfd", "asyncio.sleep"])
async def test_a_sleep_never_returns_before_its_time(precise: bool) -> None:
    sleeper = PreciseSleeper(precise=precise)
    try:
        for delay_us in (50, 300, 1_000, 2_500, 0, -100):
            deadline_ns = time.perf_counter_ns() + delay_us * 1_000
            await sleeper.sleep_until(deadline_ns)
            assert time.perf_counter_ns() >= deadline_ns
    finally:
        sleeper.close()


async def test_a_cancelled_sleep_leaves_the_timer_usable() -> None:
    sleeper = PreciseSleeper()
    try:
        long_sleep = asyncio.ensure_future(sleeper.sleep_until(time.perf_counter_ns() + 10_000_000_000))
        await asyncio.sleep(0.01)
        long_sleep.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long_sleep
        deadline_ns = time.perf_counter_ns() + 2_000_000
        await asyncio.wait_for(sleeper.sleep_until(deadline_ns), 5.0)
        assert time.perf_counter_ns() >= deadline_ns
    finally:
        sleeper.close()


@pytest.mark.parametrize("precise", [True, False], ids=["timerfd", "asyncio.sleep"])
async def test_a_pace_calls_each_step_at_or_after_its_time_until_the_step_says_stop(precise: bool) -> None:
    sleeper = PreciseSleeper(precise=precise)
    interval_ns = 700_000
    first_ns = time.perf_counter_ns() + 2_000_000
    called_ns: list[int] = []

    def step() -> bool:
        called_ns.append(time.perf_counter_ns())
        return len(called_ns) < 20

    try:
        await asyncio.wait_for(sleeper.pace(first_ns, interval_ns, step), 5.0)
        assert len(called_ns) == 20
        # A late wake-up comes once for the times it missed: never early, and the n-th call
        # comes no earlier than the n-th time.
        for index, at_ns in enumerate(called_ns):
            assert at_ns >= first_ns + index * interval_ns
        # Once the step said stop, the timer no longer wakes anything.
        await asyncio.sleep(0.01)
        assert len(called_ns) == 20
        # And it sleeps as before.
        deadline_ns = time.perf_counter_ns() + 1_000_000
        await sleeper.sleep_until(deadline_ns)
        assert time.perf_counter_ns() >= deadline_ns
    finally:
        sleeper.close()


async def test_a_step_that_raises_ends_the_pace_with_its_error() -> None:
    sleeper = PreciseSleeper()

    def step() -> bool:
        raise ValueError("a step's bug")

    try:
        with pytest.raises(ValueError, match="a step's bug"):
            await asyncio.wait_for(sleeper.pace(time.perf_counter_ns() + 500_000, 100_000, step), 5.0)
    finally:
        sleeper.close()
