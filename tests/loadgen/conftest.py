"""Load-generator tests run on asyncio's event loop; a module that sets ON_EVERY_EVENT_LOOP runs
on uvloop's as well, the loop `etude serve loadgen` runs on (etude/event_loop.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
from etude.services.loadgen import timed_transport

from etude.event_loop import fast_loop_factory


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    fast = fast_loop_factory()
    if fast is not None and getattr(item.module, "ON_EVERY_EVENT_LOOP", False):
        factories["uvloop"] = fast
    return factories


@pytest.fixture(params=["timed", "event-loop"])
def h2_writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Who writes the h2 client's requests: the timed transport's C thread (where the extension
    was built, as on every development machine and in CI) or the event loop (its fallback, and
    the TLS path). A module runs on both with `pytestmark = pytest.mark.usefixtures("h2_writer")`."""
    if request.param == "timed":
        if not timed_transport.available():
            pytest.fail("the _timed_socket extension was not built (pip install -e . needs a C compiler)")
    else:
        monkeypatch.setattr(timed_transport, "available", lambda: False)
    return str(request.param)
