"""Keeps the cyclic garbage collector out of a load test's way: nothing it does starts while a
request is due.

A full (generation 2) collection walks every tracked object of the process; in the load
generator that is everything imported and built before the run, and each one paused the event
loop for up to 31 ms at 6,000 req/s (sends held, answers unread). gc.freeze() moves those objects
to a permanent generation that collections skip (what Instagram does in its Django workers).

What the run itself allocates is mostly freed by reference counting; the collector only finds
cycles. Left automatic, it still started whenever enough objects had survived (every ~120
answers at 8,000 req/s), whatever was due: a generation-1 pass took 1-2.4 ms and was the largest
share of the sends more than 1 ms late. So during a run it does not start by itself: the run
collects the young generations at each tick's end (collect_young), where its loop pauses anyway.
Nested and concurrent runs in one process share one freeze: the last to end unfreezes and
gives the collector back.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_active_runs = 0
_was_enabled = True


@contextmanager
def objects_frozen() -> Iterator[None]:
    """Within the block, objects that existed when it began are never collected or walked, and
    the collector runs only when collect_young() asks."""
    global _active_runs, _was_enabled
    if _active_runs == 0:
        # No gc.collect() first: in a large process it took long enough to delay the run's
        # start; garbage frozen with the rest is collected after the run.
        gc.freeze()
        _was_enabled = gc.isenabled()
        gc.disable()
    _active_runs += 1
    try:
        yield
    finally:
        _active_runs -= 1
        if _active_runs == 0:
            gc.unfreeze()
            if _was_enabled:
                gc.enable()


# Every this many calls collect_young() also walks the run's older objects (generation 2, the
# frozen ones still skipped): a long run's cycles among them are freed within minutes.
FULL_EVERY = 60
_young_collections = 0


def collect_young() -> None:
    """Collects what the run made since the last call (generations 0 and 1): its cycles; every
    FULL_EVERY calls, the run's older objects too."""
    global _young_collections
    _young_collections += 1
    gc.collect(2 if _young_collections % FULL_EVERY == 0 else 1)
