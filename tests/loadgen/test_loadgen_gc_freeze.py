"""During a load test the objects the process made before it are out of the collector's way,
the collector starts only when the run asks (at tick ends), and everything is as it was
afterwards; runs that overlap share one freeze."""

from __future__ import annotations

import gc
import weakref

from etude.services.loadgen.gc_freeze import FULL_EVERY, collect_young, objects_frozen


class Node:
    def __init__(self) -> None:
        self.itself = self  # a cycle: reference counting alone never frees it


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
        assert not gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_during_a_run_the_collector_starts_only_when_the_run_asks() -> None:
    with objects_frozen():
        assert not gc.isenabled()
        node = weakref.ref(Node())
        kept = [[] for _ in range(10 * gc.get_threshold()[0])]  # would have started collections
        assert node() is not None and kept
        collect_young()
        assert node() is None
    assert gc.isenabled()


def test_a_process_that_had_the_collector_off_keeps_it_off_after_a_run() -> None:
    gc.disable()
    try:
        with objects_frozen():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_long_run_also_frees_the_cycles_among_its_older_objects() -> None:
    with objects_frozen():
        node = Node()
        collect_young()
        collect_young()  # it survived twice: among the run's older objects now
        freed = weakref.ref(node)
        del node  # garbage now, in a cycle: only a pass over the older objects finds it
        for _ in range(FULL_EVERY):
            collect_young()  # one tick end each
        assert freed() is None
