"""During a load test the objects the process made before it are out of the collector's way,
and back in it afterwards; runs that overlap share one freeze."""

from __future__ import annotations

import gc

from etude.services.loadgen.gc_freeze import objects_frozen


def test_objects_made_before_a_run_are_frozen_during_it_and_unfrozen_after() -> None:
    before = [object() for _ in range(10)]
    assert gc.get_freeze_count() == 0
    with objects_frozen():
        frozen = gc.get_freeze_count()
        assert frozen >= len(before)
    assert gc.get_freeze_count() == 0


def test_overlapping_runs_unfreeze_only_when_the_last_one_ends() -> None:
    with objects_frozen():
        frozen = gc.get_freeze_count()
        with objects_frozen():
            assert gc.get_freeze_count() == frozen  # the second run froze nothing more
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
