"""What a trial's inference service uses while the load runs: CPU time and resident memory of
its processes (the service and its serving processes), with NVML its GPU, sampled once a second
and shared out over the ticks of series.csv.

CPU and memory come from psutil when it is installed, else from /proc (Linux); the GPU columns
only when `pynvml` imports and finds a device, empty otherwise. Only a driver that sees the
process (local) can sample it; on Kubernetes the columns stay empty.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..results.layout import SERIES_FILE
from ..results.run import read_run_info
from ..results.series import TickResources, read_series, with_resources, write_series

_log = structlog.get_logger()

SAMPLE_INTERVAL_S = 1.0
TICK_NS = 1_000_000_000
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ResourceSample:
    """One reading: CPU seconds used so far (cumulative), resident bytes, and the GPU's state."""

    epoch_ns: int
    cpu_s: float
    rss_bytes: int
    gpu_utilization_percent: float | None = None
    gpu_memory_bytes: int | None = None


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants alive now (from /proc; just `pid` where children are not listed)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in _listdir(Path(f"/proc/{current}/task")):
            with contextlib.suppress(OSError, ValueError):
                pending.extend(
                    int(child) for child in Path(f"/proc/{current}/task/{task}/children").read_text().split()
                )
    return found


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of `pid` and its descendants, from /proc.

    Raises ProcessLookupError when `pid` is gone; a descendant that exits meanwhile is skipped.
    """
    cpu_s, rss_bytes = 0.0, 0
    for index, member in enumerate(process_tree(pid)):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            if index == 0:
                raise ProcessLookupError(pid) from None
            continue
        # Fields after the command name (which may hold spaces), 0-based from field 3 (state):
        # utime and stime are fields 14 and 15 of the whole line.
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu_s += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss_bytes += int(line.split()[1]) * 1024
                break
    return cpu_s, rss_bytes


def psutil_usage(pid: int) -> tuple[float, int]:
    """The same reading through psutil (any OS it supports)."""
    import psutil

    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None
    cpu_s, rss_bytes = 0.0, 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            cpu_s += times.user + times.system
            rss_bytes += member.memory_info().rss
    return cpu_s, rss_bytes


UsageReader = Callable[[int], tuple[float, int]]


def process_usage_reader() -> UsageReader:
    """psutil's reader when psutil is installed, else /proc's."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        return proc_usage
    return psutil_usage


class _Gpu:
    """NVML's view of the devices the process tree holds memory on; None when NVML is absent."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._devices = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

    @classmethod
    def open(cls) -> _Gpu | None:
        try:
            gpu = cls()
        except Exception:  # not importable, no driver, no device: the GPU columns stay empty
            return None
        return gpu if gpu._devices else None

    def read(self, pids: Sequence[int]) -> tuple[float | None, int | None]:
        """Mean utilisation of the devices the processes use, and the memory they hold there."""
        wanted, busy, memory, used = set(pids), [], 0, False
        for device in self._devices:
            held = [p for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(device) if p.pid in wanted]
            if held:
                used = True
                busy.append(float(self._nvml.nvmlDeviceGetUtilizationRates(device).gpu))
                memory += sum(int(p.usedGpuMemory or 0) for p in held)
        if not used:
            return None, None
        return sum(busy) / len(busy), memory

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


class ResourceSampler:
    """Samples process `pid` (and its descendants) every `interval_s` while `sampling()` is open."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[ResourceSample] = []
        self._usage: UsageReader = process_usage_reader()
        self._gpu: _Gpu | None = None

    def sample(self) -> ResourceSample:
        """One reading now (blocking: a few /proc reads); raises ProcessLookupError."""
        cpu_s, rss_bytes = self._usage(self.pid)
        gpu_busy, gpu_memory = (None, None) if self._gpu is None else self._gpu.read(process_tree(self.pid))
        return ResourceSample(time.time_ns(), cpu_s, rss_bytes, gpu_busy, gpu_memory)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[list[ResourceSample]]:
        """Samples in the background (off the loop) until the block ends, and once more then."""
        self._gpu = await asyncio.to_thread(_Gpu.open)
        task = asyncio.create_task(self._sample_periodically(), name=f"resources-{self.pid}")
        try:
            yield self.samples
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            with contextlib.suppress(ProcessLookupError):
                self.samples.append(await asyncio.to_thread(self.sample))
            if self._gpu is not None:
                self._gpu.close()

    async def _sample_periodically(self) -> None:
        next_s = time.monotonic()
        while True:
            try:
                self.samples.append(await asyncio.to_thread(self.sample))
            except ProcessLookupError:
                _log.warning("resource_sampling_lost_process", pid=self.pid)
                return
            next_s += self.interval_s
            await asyncio.sleep(max(0.0, next_s - time.monotonic()))


def usage_per_tick(
    samples: Sequence[ResourceSample], first_tick_epoch_ns: int, ticks: int
) -> dict[int, TickResources]:
    """Each tick's share of the samples; tick i covers [first + i s, first + (i + 1) s).

    CPU cores: the CPU time between the tick's edges (linear between the samples around each
    edge) over its length; memory: the highest sample within the tick, or the nearest one.
    Ticks outside the sampled span are left out.
    """
    if len(samples) < 2:
        return {}
    times = [sample.epoch_ns for sample in samples]
    per_tick: dict[int, TickResources] = {}
    for tick in range(ticks):
        start_ns = first_tick_epoch_ns + tick * TICK_NS
        end_ns = start_ns + TICK_NS
        if start_ns < times[0] - TICK_NS // 2 or end_ns > times[-1] + TICK_NS // 2:
            continue
        cores = (_cpu_at(samples, times, end_ns) - _cpu_at(samples, times, start_ns)) / (TICK_NS / 1e9)
        inside = samples[bisect.bisect_left(times, start_ns) : bisect.bisect_left(times, end_ns)]
        if not inside:
            nearest = min(samples, key=lambda sample: abs(sample.epoch_ns - (start_ns + end_ns) // 2))
            inside = [nearest]
        gpu_busy = [s.gpu_utilization_percent for s in inside if s.gpu_utilization_percent is not None]
        gpu_memory = [s.gpu_memory_bytes for s in inside if s.gpu_memory_bytes is not None]
        per_tick[tick] = TickResources(
            inference_cpu_cores=round(max(0.0, cores), 3),
            inference_rss_mb=round(max(s.rss_bytes for s in inside) / _MIB, 1),
            gpu_utilization_percent=round(sum(gpu_busy) / len(gpu_busy), 1) if gpu_busy else None,
            gpu_memory_mb=round(max(gpu_memory) / _MIB, 1) if gpu_memory else None,
        )
    return per_tick


def _cpu_at(samples: Sequence[ResourceSample], times: Sequence[int], at_ns: int) -> float:
    """Cumulative CPU seconds at `at_ns`, linear between the samples around it (clamped at the ends)."""
    index = bisect.bisect_left(times, at_ns)
    if index == 0:
        return samples[0].cpu_s
    if index == len(samples):
        return samples[-1].cpu_s
    before, after = samples[index - 1], samples[index]
    fraction = (at_ns - before.epoch_ns) / max(1, after.epoch_ns - before.epoch_ns)
    return before.cpu_s + fraction * (after.cpu_s - before.cpu_s)


def attach_to_series(folder: Path, samples: Sequence[ResourceSample]) -> int:
    """Writes each tick's share of `samples` into the series.csv of the run in `folder` (blocking);
    returns the ticks that got values. Tick 0 starts at run.json's clock anchor (read just before
    the first tick, a few milliseconds early at most)."""
    series_path = folder / SERIES_FILE
    rows = read_series(series_path)
    first_tick_epoch_ns = int(read_run_info(folder)["wall_clock_epoch_ns"])
    per_tick = usage_per_tick(samples, first_tick_epoch_ns, max((row.tick for row in rows), default=-1) + 1)
    if per_tick:
        write_series(series_path, with_resources(rows, per_tick))
    return len(per_tick)
