"""One dedicated model thread: runs blocking calls in order and hands each outcome to the event loop.

Lighter than `loop.run_in_executor` on a one-worker ThreadPoolExecutor, which per call builds a
concurrent Future, chains it to an asyncio one and takes the pool's semaphores: here a call is
one queue put, and its outcome one `call_soon_threadsafe` back to the loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

ResultT = TypeVar("ResultT")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[ResultT]):
    """What a call returned (or raised), when it ran (monotonic ns) and the CPU time it used.

    The CPU time excludes waiting for the GIL, which the wall time of a busy process includes.
    """

    result: ResultT | None
    error: BaseException | None
    started_ns: int
    ended_ns: int
    cpu_ns: int


OnDone = Callable[[Outcome[ResultT]], None]
_Call = tuple[Callable[[], ResultT], asyncio.AbstractEventLoop, OnDone[ResultT]]


def run_inline(call: Callable[[], ResultT]) -> Outcome[ResultT]:
    """Runs `call()` in the calling thread, with the same account of it as the model thread's."""
    started_ns, cpu_started_ns = time.monotonic_ns(), time.thread_time_ns()
    try:
        result = call()
    except Exception as error:
        return Outcome(None, error, started_ns, time.monotonic_ns(), time.thread_time_ns() - cpu_started_ns)
    return Outcome(result, None, started_ns, time.monotonic_ns(), time.thread_time_ns() - cpu_started_ns)


class ModelThread(Generic[ResultT]):
    """A thread named `name` that first runs `initializer()`, then each submitted call in turn."""

    def __init__(self, name: str, initializer: Callable[[], None] | None = None) -> None:
        self._calls: queue.SimpleQueue[_Call[ResultT] | None] = queue.SimpleQueue()
        self._initializer = initializer
        self._thread = threading.Thread(target=self._work, name=name)
        self._thread.start()

    def submit(
        self, call: Callable[[], ResultT], loop: asyncio.AbstractEventLoop, on_done: OnDone[ResultT]
    ) -> None:
        """Runs `call()` in the thread; `on_done(outcome)` then runs on `loop`."""
        self._calls.put((call, loop, on_done))

    def stop(self) -> None:
        """Lets the calls already submitted finish, then ends the thread (blocks until it has)."""
        self._calls.put(None)
        self._thread.join()

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (item := self._calls.get()) is not None:
            call, loop, on_done = item
            started_ns, cpu_started_ns = time.monotonic_ns(), time.thread_time_ns()
            try:
                result = call()
            except BaseException as error:  # handed to the loop, which decides what it means
                outcome: Outcome[ResultT] = Outcome(
                    None, error, started_ns, time.monotonic_ns(), time.thread_time_ns() - cpu_started_ns
                )
            else:
                outcome = Outcome(
                    result, None, started_ns, time.monotonic_ns(), time.thread_time_ns() - cpu_started_ns
                )
            try:
                loop.call_soon_threadsafe(on_done, outcome)
            except RuntimeError:
                pass  # the loop is closed: nobody is left to tell
