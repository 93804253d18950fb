"""Sleeping to an exact perf_counter_ns inside asyncio (a timerfd on Linux): never early, many
sleeps on one timer, cancellation leaves it usable, close releases it."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from etude.services.loadgen.precise_sleep import PreciseSleeper


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
