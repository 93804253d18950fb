"""Sessions pulled ahead of need from the workload's async source, so that the load generator's
timer callback can start a new session without waiting (it may not await).

The source is read by one task only (an async generator cannot be iterated by two at once);
it keeps up to `depth` sessions buffered and tops them up when half are taken. Sessions
without clicks are dropped here. An error of the source is raised by `take()` once the
sessions pulled before it are used up, as if nothing had been buffered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sized
from typing import Generic, Protocol, TypeVar


class _HasClicks(Protocol):
    @property
    def item_ids(self) -> Sized: ...


SessionT = TypeVar("SessionT", bound=_HasClicks)

DEFAULT_DEPTH = 64


class SessionBuffer(Generic[SessionT]):
    """`take_nowait()` a buffered session or None; `await take()` the next one (None once the
    source ended); `aclose()` stops the pulling task."""

    def __init__(self, source: AsyncIterator[SessionT], depth: int = DEFAULT_DEPTH) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._source = source
        self._depth = depth
        self._buffer: deque[SessionT] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        # Set when the buffer wants topping up; the pulling task clears it when full.
        self._wanted = asyncio.Event()
        # Set by the pulling task after each pull (or the end), for a take() that waits.
        self._pulled = asyncio.Event()

    @property
    def exhausted(self) -> bool:
        """The source ended (or failed) and every session it gave was taken."""
        return self._ended and not self._buffer

    def take_nowait(self) -> SessionT | None:
        """A buffered session, or None when none is buffered right now."""
        if not self._buffer:
            self._want_more()
            return None
        session = self._buffer.popleft()
        if len(self._buffer) <= self._depth // 2:
            self._want_more()
        return session

    async def take(self) -> SessionT | None:
        """The next session, waiting for the source when none is buffered; None at its end."""
        while not self._buffer:
            if self._ended:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return None
            self._pulled.clear()
            self._want_more()
            await self._pulled.wait()
        return self.take_nowait()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _want_more(self) -> None:
        if self._ended:
            return
        self._wanted.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pull())

    async def _pull(self) -> None:
        try:
            while True:
                await self._wanted.wait()
                while len(self._buffer) < self._depth:
                    session = await anext(self._source, None)
                    if session is None:
                        return
                    if len(session.item_ids) > 0:
                        self._buffer.append(session)
                        self._pulled.set()
                self._wanted.clear()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # handed to take(): the run fails as it would have unbuffered
            self._error = error
        finally:
            self._ended = True
            self._pulled.set()
