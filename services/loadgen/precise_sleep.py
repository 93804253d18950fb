"""Sleeping until an exact time.perf_counter_ns() inside asyncio, to the microsecond.

asyncio's timers wait in epoll_wait, whose timeout is whole milliseconds (CPython rounds up), so
a request due 0.3 ms from now is sent up to a millisecond late, and two requests due 0.5 ms apart
often leave together. The server then sees bursts the schedule never asked for and queues one
behind the other: at 2,000 req/s on a no-op server that doubled the p90 from the actual send
(0.85 ms against 0.35 ms for a smooth open-loop client in C, benchmarks/bench_loadgen.py part 3).

On Linux a timerfd (armed for the absolute CLOCK_MONOTONIC time, which is what perf_counter_ns
reads) is registered with the event loop, so the loop wakes when the timer fires rather than on
the next millisecond. Elsewhere, or when the timerfd cannot be made, it is asyncio.sleep.

`pace` is the cheap way through a run of evenly spaced times: the timer is armed once, periodic,
and its own wake-up calls the step, so that no timer is re-armed and no task resumed per step.
A request sent that way costs about a third less of the load generator's CPU than one sent
after `await sleep_until` (benchmarks/bench_loadgen.py, issue 16).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import math
import os
import time
from collections.abc import Callable

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library's timerfd calls, where perf_counter_ns reads CLOCK_MONOTONIC (Linux)."""
    if not hasattr(os, "O_CLOEXEC") or time.get_clock_info("perf_counter").implementation != (
        "clock_gettime(CLOCK_MONOTONIC)"
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc's among them
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
    except (OSError, AttributeError):
        return None
    return libc


class PreciseSleeper:
    """`await sleep_until(deadline_ns)` on one event loop; `close()` releases the timer."""

    def __init__(self, *, precise: bool = True) -> None:
        self._libc = _libc() if precise else None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._step: Callable[[], bool] | None = None
        self._spec = _Itimerspec()
        if self._libc is not None:
            fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            self._fd = fd if fd >= 0 else -1

    @classmethod
    def fallback(cls) -> PreciseSleeper:
        """One that sleeps with asyncio.sleep and holds no file descriptor."""
        return cls(precise=False)

    @property
    def precise(self) -> bool:
        """True when sleeps wake at their time (a timerfd), False when they are asyncio.sleep."""
        return self._fd >= 0

    async def sleep_until(self, deadline_ns: int) -> None:
        """Returns at `deadline_ns` (time.perf_counter_ns()), or at once when it has passed."""
        delay_ns = deadline_ns - time.perf_counter_ns()
        if delay_ns <= 0:
            return
        if self._fd < 0 or self._libc is None:
            await _sleep_until(deadline_ns)
            return
        loop = self._attach()
        if not self._arm(deadline_ns, 0):
            await _sleep_until(deadline_ns)
            return
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def pace(self, first_ns: int, interval_ns: float, step: Callable[[], bool]) -> None:
        """Calls `step()` at `first_ns` and every `interval_ns` after it until it returns False,
        then returns. A step is never called early; one that comes late (the loop was busy)
        comes once for all the times it missed. The interval is rounded up to whole ns: late by
        at most a nanosecond per step, never early."""
        interval = max(1, math.ceil(interval_ns))
        if self._fd < 0 or self._libc is None:
            await self._pace_by_sleeping(first_ns, interval, step)
            return
        loop = self._attach()
        if not self._arm(first_ns, interval):
            await self._pace_by_sleeping(first_ns, interval, step)
            return
        waiter = self._waiter = loop.create_future()
        self._step = step
        try:
            await waiter
        finally:
            self._step = None
            self._waiter = None
            self._arm(0, 0)  # disarmed: no wake-ups after the pace ends

    async def _pace_by_sleeping(self, first_ns: int, interval_ns: int, step: Callable[[], bool]) -> None:
        due_ns = first_ns
        while True:
            await self.sleep_until(due_ns)
            if not step():
                return
            missed = max(0, time.perf_counter_ns() - due_ns) // interval_ns
            due_ns += (missed + 1) * interval_ns

    def _attach(self) -> asyncio.AbstractEventLoop:
        """The running loop, which the timer wakes (registered with it once)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            loop.add_reader(self._fd, self._fired)
            self._loop = loop
        return loop

    def _arm(self, first_ns: int, interval_ns: int) -> bool:
        """Fires at `first_ns`, then every `interval_ns` (0: once); (0, 0) disarms."""
        assert self._libc is not None
        spec = self._spec
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(first_ns, 1_000_000_000)
        spec.it_interval.tv_sec, spec.it_interval.tv_nsec = divmod(interval_ns, 1_000_000_000)
        return self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) == 0

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # re-armed after it fired: the read found nothing
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        step = self._step
        if step is None:
            waiter.set_result(None)
            return
        try:
            go_on = step()
        except BaseException as error:
            self._step = None
            self._arm(0, 0)
            waiter.set_exception(error)
            return
        if not go_on:
            self._step = None
            self._arm(0, 0)
            waiter.set_result(None)

    def close(self) -> None:
        if self._fd >= 0:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


async def _sleep_until(deadline_ns: int) -> None:
    """asyncio.sleep until `deadline_ns`, never before it: a loop's timers may wake early (uvloop
    rounds a delay to whole milliseconds), so sleep again for what is left."""
    while (remaining_ns := deadline_ns - time.perf_counter_ns()) > 0:  # noqa: ASYNC110 (a clock, no event)
        await asyncio.sleep(remaining_ns / 1e9)
