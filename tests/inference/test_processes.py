"""Several serving processes on one port (`etude serve inference --serving-processes N`)."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from etude.services.inference import cli
from etude.services.inference.processes import child_flags

from etude.v1 import recommender_pb2, recommender_pb2_grpc

STARTUP_S = 120.0


@contextmanager
def supervisor(tmp_path: Path, processes: int) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "etude.services.cli", "serve", "inference", "--model", "noop"]
    command += ["--catalog-size", "100", "--port", "0", "--port-file", str(port_file)]
    command += ["--serving-processes", str(processes), "--log-level", "warning", "--grace-s", "1"]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + STARTUP_S
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, "supervisor did not serve"
            time.sleep(0.1)
        yield process, int(port_file.read_text())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def serving_pids(port: int, wanted: int) -> set[int]:
    """The pids answering on `port`, from new connections (the kernel spreads them) until `wanted`."""
    pids: set[int] = set()
    for _ in range(200):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = recommender_pb2_grpc.RecommenderServiceStub(channel).GetModelInfo(
                recommender_pb2.GetModelInfoRequest(), timeout=10
            )
        pids.add(int(info.details["pid"]))
        if len(pids) == wanted:
            break
    return pids


def gone(pid: int, within_s: float = 15.0) -> bool:
    """Whether `pid` has exited (or is a zombie nobody reaped yet) within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_two_serving_processes_answer_on_one_port_and_stop_cleanly(tmp_path: Path) -> None:
    with supervisor(tmp_path, 2) as (process, port):
        pids = serving_pids(port, 2)
        assert len(pids) == 2 and process.pid not in pids
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert all(gone(pid) for pid in pids)


def test_serving_processes_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    with supervisor(tmp_path, 2) as (process, port):
        pids = serving_pids(port, 2)
        process.kill()
        process.wait()
    assert all(gone(pid) for pid in pids)


def test_children_get_the_flags_of_the_supervisor_except_the_process_count() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--model", "gru4rec", "--catalog-size", "500", "--executors", "2", "--serving-processes", "3"]
    args = parser.parse_args(argv)
    flags = child_flags(parser, args, skip=("serving_processes", "reuse_port"))
    again = parser.parse_args(flags)
    assert (again.model, again.catalog_size, again.executors) == ("gru4rec", 500, 2)
    assert again.serving_processes == 1 and not again.reuse_port
