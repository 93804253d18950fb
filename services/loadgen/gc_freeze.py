"""Keeps what a process made before a load test out of the cyclic garbage collector's way.

A full (generation 2) collection walks every tracked object of the process; in the load
generator that is everything imported and built before the run, and each one paused the event
loop for up to 31 ms at 6,000 req/s (sends held, answers unread). gc.freeze() moves those objects
to a permanent generation that collections skip (what Instagram does in its Django workers);
what the run itself allocates is still collected. Nested and concurrent runs in one process
share one freeze: the last to end unfreezes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_active_runs = 0


@contextmanager
def objects_frozen() -> Iterator[None]:
    """Within the block, objects that existed when it began are never collected or walked."""
    global _active_runs
    if _active_runs == 0:
        # No gc.collect() first: in a large process it took long enough to delay the run's
        # start; garbage frozen with the rest is collected after the run.
        gc.freeze()
    _active_runs += 1
    try:
        yield
    finally:
        _active_runs -= 1
        if _active_runs == 0:
            gc.unfreeze()
