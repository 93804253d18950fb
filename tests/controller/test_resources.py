"""The inference service's CPU and memory, sampled from outside its process and shared out over
the ticks of series.csv: real processes that burn CPU and hold memory, and the tick arithmetic."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from etude.services.controller.resources import (
    ResourceSample,
    proc_usage,
    process_tree,
    usage_per_tick,
)
from etude.services.results.series import TickResources

# A parent that holds 64 MiB and starts a child that burns CPU for as long as it lives.
_BURNING_CHILD = "import time\nwhile True: pass\n"
_PARENT = f"""
import subprocess, sys, time
held = bytearray(64 * 1024 * 1024)
child = subprocess.Popen([sys.executable, "-c", {_BURNING_CHILD!r}])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def parent_of_a_busy_child() -> Iterator[tuple[int, int]]:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        yield parent.pid, child_pid
    finally:
        subprocess.run(["kill", str(child_pid)], check=False)
        parent.kill()
        parent.wait(timeout=10)


def test_a_process_is_sampled_with_its_descendants(parent_of_a_busy_child: tuple[int, int]) -> None:
    parent_pid, child_pid = parent_of_a_busy_child
    assert process_tree(parent_pid) == [parent_pid, child_pid]
    cpu_before_s, rss_bytes = proc_usage(parent_pid)
    time.sleep(1.0)
    cpu_after_s, _ = proc_usage(parent_pid)
    # The busy child's time counts (the parent only sleeps); a shared machine gives it less than a core.
    assert cpu_after_s - cpu_before_s > 0.2
    assert rss_bytes > 64 * 1024 * 1024  # the parent's held bytes plus both interpreters


def test_psutil_reads_what_proc_reads(parent_of_a_busy_child: tuple[int, int]) -> None:
    pytest.importorskip("psutil")
    from etude.services.controller.resources import psutil_usage

    parent_pid, _ = parent_of_a_busy_child
    proc_cpu_s, proc_rss = proc_usage(parent_pid)
    psutil_cpu_s, psutil_rss = psutil_usage(parent_pid)
    assert psutil_cpu_s == pytest.approx(proc_cpu_s, abs=0.3)
    assert psutil_rss == pytest.approx(proc_rss, rel=0.1)


def test_a_process_that_is_gone_raises_process_lookup_error() -> None:
    with pytest.raises(ProcessLookupError):
        proc_usage(2**22 + 1)  # above the kernel's pid_max default: no such process


def test_each_tick_gets_the_cpu_used_between_its_edges_and_its_highest_memory() -> None:
    second_ns = 1_000_000_000
    start_ns = 10 * second_ns
    # Two cores busy throughout, sampled 0.3 s into each second; memory grows 1 MiB a second.
    samples = [
        ResourceSample(
            start_ns + (index * 10 + 3) * second_ns // 10, 2.0 * (index + 0.3), (100 + index) << 20
        )
        for index in range(-1, 5)
    ]
    per_tick = usage_per_tick(samples, start_ns, ticks=4)
    assert sorted(per_tick) == [0, 1, 2, 3]
    assert [resources.inference_cpu_cores for resources in per_tick.values()] == [2.0] * 4
    assert [per_tick[tick].inference_rss_mb for tick in range(4)] == [100.0, 101.0, 102.0, 103.0]
    assert per_tick[0].gpu_utilization_percent is None and per_tick[0].gpu_memory_mb is None


def test_ticks_outside_the_sampled_span_get_no_values() -> None:
    second_ns = 1_000_000_000
    samples = [ResourceSample(index * second_ns, float(index), 1 << 20) for index in range(3)]
    per_tick = usage_per_tick(samples, 0, ticks=6)
    # Tick 2 ends a second after the last sample: what it used is not known.
    assert sorted(per_tick) == [0, 1]
    assert per_tick[1] == TickResources(1.0, 1.0, None, None)
    assert usage_per_tick(samples[:1], 0, ticks=2) == {}
