"""How the model executors share the machine: torch threads per executor, a CUDA stream each.

Policy: one core is left to the event loop, gRPC's threads and a co-located load generator; N
executors share the others, max(1, (cores - 1) // N) intra-op threads each, so that N x threads
never exceeds the cores (oversubscribed OpenMP teams spin against each other, and a team spanning
every core waits at each operator's barrier whenever one of its threads is descheduled: on the
2-core machine the chunked scorer ran 3-10x slower per operator with 2 threads than with 1,
benchmarks/bench_scoring.py --thread-sweep). An explicit thread count overrides it. On CUDA each
executor thread gets a stream of its own, so independent batches overlap on the device instead of
queueing on the default one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import structlog
import torch

_log = structlog.get_logger()


def cores_available() -> int:
    """CPU cores this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_executor(executors: int, requested_threads: int = 0, cores: int | None = None) -> int:
    """Intra-op threads of each executor: `requested_threads` when > 0, else the cores but one,
    split between the executors (at least 1 each)."""
    if executors < 1:
        raise ValueError(f"executors must be >= 1, got {executors}")
    if requested_threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = the cores but one / executors), got {requested_threads}")
    if requested_threads > 0:
        return requested_threads
    spare = (cores if cores is not None else cores_available()) - 1
    return max(1, spare // executors)


def executor_initializer(device: str, threads: int) -> Callable[[int], None]:
    """What each executor thread runs once at start: its thread count and, on CUDA, its stream."""
    torch_device = torch.device(device)

    def initialize(index: int) -> None:
        # OpenMP's team size is per calling thread: set it in the thread that runs the model.
        torch.set_num_threads(threads)
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
            # The current stream is per thread: this executor's kernels queue on its own stream.
            torch.cuda.set_stream(torch.cuda.Stream(device=torch_device))
        _log.info("executor_started", executor=index, threads=threads, device=device)

    return initialize
