"""A child service's life is tied to its parent's: when the parent dies, even by SIGKILL, the child
gets SIGTERM and drains, so no `etude serve` outlives the controller or test that started it.

The parent names itself in ETUDE_PARENT_PID; the child asks Linux for a parent-death signal
(prctl PR_SET_PDEATHSIG) and then checks that the parent had not already gone before it asked.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ENV = "ETUDE_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_environment() -> dict[str, str]:
    """What a parent adds to a child's environment so the child dies with it."""
    return {PARENT_PID_ENV: str(os.getpid())}


def die_with_parent() -> bool:
    """Arms the parent-death signal when started by an Etude parent; returns whether it did.

    The signal fires when the thread that forked the child exits: children are started from the
    parent's event-loop thread, which lives as long as the parent does.
    """
    expected_parent = os.environ.get(PARENT_PID_ENV)
    if not expected_parent or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != int(expected_parent):
        # The parent died between fork and prctl: nobody will signal us, so go now.
        os.kill(os.getpid(), signal.SIGTERM)
    return True
