"""Which asyncio event loop a process runs: uvloop where a service's hot path is the loop itself.

The load generator wakes the loop about twice per request (the send time, the answer); with
asyncio's own loop in Python that costs tens of microseconds of CPU per request, uvloop (libuv,
in C) a fraction of it (benchmarks/bench_loadgen.py, issue 16). Services whose time goes into
models or gRPC's own C core keep asyncio's loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
# ETUDE_EVENT_LOOP=asyncio keeps asyncio's own loop everywhere (to compare, or to debug).
EVENT_LOOP_ENV = "ETUDE_EVENT_LOOP"


def fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory where uvloop is installed (Linux, macOS) and not switched off by
    ETUDE_EVENT_LOOP=asyncio, else None (asyncio's)."""
    if os.environ.get(EVENT_LOOP_ENV, "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, _T], *, fast: bool = False) -> _T:
    """asyncio.run(main), on uvloop when `fast` and uvloop is there."""
    factory = fast_loop_factory() if fast else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
