"""How executors share the machine: the thread policy and each executor's own set-up."""

from __future__ import annotations

import threading

import pytest
import torch
from etude.services.inference.executors import executor_initializer, threads_per_executor


@pytest.mark.parametrize(
    ("executors", "requested", "cores", "expected"),
    [(1, 0, 8, 7), (2, 0, 8, 3), (3, 0, 8, 2), (4, 0, 2, 1), (1, 0, 2, 1), (1, 0, 1, 1), (2, 3, 8, 3)],
)
def test_executors_split_the_cores_but_one_unless_a_thread_count_is_given(
    executors: int, requested: int, cores: int, expected: int
) -> None:
    assert threads_per_executor(executors, requested, cores) == expected


@pytest.mark.parametrize(("executors", "requested"), [(0, 0), (1, -1)])
def test_nonsensical_executor_settings_are_refused_naming_the_field(executors: int, requested: int) -> None:
    with pytest.raises(ValueError, match="executors" if executors < 1 else "threads"):
        threads_per_executor(executors, requested, 8)


def test_initializer_sets_the_thread_count_in_the_executor_thread() -> None:
    seen: list[int] = []
    before = torch.get_num_threads()

    def run() -> None:
        executor_initializer("cpu", 1)(0)
        seen.append(torch.get_num_threads())
        torch.set_num_threads(before)  # the default of threads started later: leave it as it was

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_each_cuda_executor_thread_gets_its_own_stream() -> None:
    streams: list[int] = []

    def run(index: int) -> None:
        executor_initializer("cuda", 1)(index)
        streams.append(torch.cuda.current_stream().cuda_stream)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    default = torch.cuda.default_stream().cuda_stream
    assert len(set(streams)) == 2 and default not in streams
