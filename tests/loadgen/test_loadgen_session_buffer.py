"""Sessions pulled ahead of need: taken in the source's order, without clicks dropped, the source
read by one task that stays ahead, its end and its errors seen by take() after what came before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from etude.services.loadgen.generator import Session
from etude.services.loadgen.session_buffer import SessionBuffer


class Source:
    """Yields `count` sessions (every third one without clicks), then ends or fails."""

    def __init__(self, count: int, fail: bool = False) -> None:
        self.count = count
        self.fail = fail
        self.pulled = 0

    async def sessions(self) -> AsyncIterator[Session]:
        for index in range(self.count):
            self.pulled += 1
            yield Session(str(index), [] if index % 3 == 2 else [index + 1])
        if self.fail:
            raise ConnectionError("the workload service went away")


async def test_sessions_come_in_order_without_the_empty_ones_and_none_at_the_end() -> None:
    source = Source(9)
    buffer = SessionBuffer(source.sessions(), depth=4)
    taken = []
    while (session := await buffer.take()) is not None:
        taken.append(session.session_id)
    assert taken == ["0", "1", "3", "4", "6", "7"]
    assert buffer.exhausted
    await buffer.aclose()


async def test_after_one_take_the_buffer_fills_ahead_and_take_nowait_needs_no_wait() -> None:
    source = Source(100)
    buffer = SessionBuffer(source.sessions(), depth=8)
    assert buffer.take_nowait() is None  # nothing pulled yet: asks for more, does not wait
    first = await buffer.take()
    assert first is not None
    await asyncio.sleep(0.01)  # the pulling task fills the buffer meanwhile: `depth`, no more
    # 8 sessions with clicks came in (every third one has none); the first was taken and 7 left
    # are more than half of `depth`: no pull yet.
    assert source.pulled == 11
    ahead = [buffer.take_nowait() for _ in range(7)]
    taken = [session.session_id for session in ahead if session is not None]
    assert taken == ["1", "3", "4", "6", "7", "9", "10"]
    await buffer.aclose()


async def test_a_failing_source_fails_take_after_the_sessions_it_gave() -> None:
    buffer = SessionBuffer(Source(4, fail=True).sessions(), depth=16)
    taken = [await buffer.take() for _ in range(3)]
    assert [session.session_id for session in taken if session is not None] == ["0", "1", "3"]
    with pytest.raises(ConnectionError, match="went away"):
        await buffer.take()
    assert buffer.exhausted
    await buffer.aclose()


async def test_closing_stops_the_pulling_task() -> None:
    source = Source(10_000)
    buffer = SessionBuffer(source.sessions(), depth=4)
    await buffer.take()
    await buffer.aclose()
    pulled = source.pulled
    await asyncio.sleep(0.01)
    assert source.pulled == pulled < 10_000


def test_a_depth_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        SessionBuffer(Source(1).sessions(), depth=0)
