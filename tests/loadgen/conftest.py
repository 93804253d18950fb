"""Load-generator tests run on asyncio's event loop; a module that sets ON_EVERY_EVENT_LOOP runs
on uvloop's as well, the loop `etude serve loadgen` runs on (etude/event_loop.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

from etude.event_loop import fast_loop_factory


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    fast = fast_loop_factory()
    if fast is not None and getattr(item.module, "ON_EVERY_EVENT_LOOP", False):
        factories["uvloop"] = fast
    return factories
