"""What Etude's serving path costs over bare gRPC: `etude serve inference --model noop` against a
bare grpc.aio server answering the same Recommend call with canned bytes.

Both servers run as child processes; an open-loop client (another child process, raw bytes, so
it costs the same against both) sends at `--rate` for `--seconds`, each request timed from its
intended send time. Rounds alternate between the servers so that noise from other processes
on the machine falls on both; the table shows each round and the median p90 of each server.
Target (issue 10): noop p90 <= 1.5x the bare server's p90 at 1,000 req/s.

    .venv/bin/python benchmarks/bench_noop_path.py [--rate 1000 --seconds 10 --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from etude.v1 import recommender_pb2

METHOD = "/etude.v1.RecommenderService/Recommend"
REQUEST = recommender_pb2.RecommendRequest(session_id="s", item_ids=[3, 1, 4, 1, 5], k=21).SerializeToString()
# What noop answers: items 1..21, zero scores, a server timing.
RESPONSE = recommender_pb2.RecommendResponse(
    item_ids=range(1, 22),
    scores=[0.0] * 21,
    timing=recommender_pb2.ServerTiming(queue_us=5, inference_us=50, batch_size=1, server_total_us=80),
).SerializeToString()


async def serve_bare(port_file: Path) -> None:
    """A grpc.aio server whose Recommend answers canned bytes: no protobuf, no batcher, no model."""

    async def recommend(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return RESPONSE

    handler = grpc.method_handlers_generic_handler(
        "etude.v1.RecommenderService", {"Recommend": grpc.unary_unary_rpc_method_handler(recommend)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


async def open_loop(target: str, rate_per_s: float, seconds: float) -> dict[str, float]:
    """Sends REQUEST on schedule; latency of each answer from its intended send time."""
    latencies_ms: list[float] = []
    failures = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        await call(REQUEST, timeout=10)  # connect before the clock starts

        async def one(intended_s: float) -> None:
            nonlocal failures
            try:
                await call(REQUEST, timeout=1.0)
                latencies_ms.append((time.perf_counter() - intended_s) * 1000)
            except grpc.aio.AioRpcError:
                failures += 1

        start_s = time.perf_counter() + 0.1
        tasks = []
        for index in range(int(rate_per_s * seconds)):
            intended_s = start_s + index / rate_per_s
            delay_s = intended_s - time.perf_counter()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            tasks.append(asyncio.ensure_future(one(intended_s)))
        await asyncio.gather(*tasks)
    latencies_ms.sort()

    def percentile(p: float) -> float:
        return latencies_ms[min(len(latencies_ms) - 1, int(p / 100 * len(latencies_ms)))]

    return {"p50": percentile(50), "p90": percentile(90), "p99": percentile(99), "failed": failures}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def child(command: list[str], port_file: Path) -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not start: {process.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield f"127.0.0.1:{port_file.read_text()}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(server: tuple[str, int], rate_per_s: float, seconds: float) -> dict[str, float]:
    """One open-loop run from a client process of its own, and the server's CPU per request."""
    target, pid = server
    cpu_before_s = cpu_s(pid)
    result = subprocess.run(
        [sys.executable, __file__, "--client", target, "--rate", str(rate_per_s), "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["server_cpu_us"] = (cpu_s(pid) - cpu_before_s) * 1e6 / (rate_per_s * seconds)
    return figures


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        bare_port, noop_port = Path(folder) / "bare", Path(folder) / "noop"
        etude = [sys.executable, "-m", "etude.services.cli", "serve", "inference", "--model", "noop"]
        etude += ["--catalog-size", "1000", "--port", "0", "--port-file", str(noop_port)]
        etude += ["--log-level", "warning", *args.server_flags]
        with (
            child([sys.executable, __file__, "--serve-bare", str(bare_port)], bare_port) as bare,
            child(etude, noop_port) as noop,
        ):
            print(
                f"open loop at {args.rate:g} req/s for {args.seconds:g} s per round; latency from the "
                f"intended send (ms); noop flags: {' '.join(args.server_flags) or '(defaults)'}"
            )
            print("round  server  p50     p90     p99     failed  server CPU us/request")
            p90s: dict[str, list[float]] = {"bare": [], "noop": []}
            for target in (bare, noop):  # warm both (first connections, first calls), unreported
                measure(target, args.rate, 1.0)
            for round_index in range(args.rounds):
                for name, target in (("bare", bare), ("noop", noop)):
                    figures = measure(target, args.rate, args.seconds)
                    p90s[name].append(figures["p90"])
                    print(
                        f"{round_index:>5}  {name:<6}  {figures['p50']:.3f}   {figures['p90']:.3f}   "
                        f"{figures['p99']:.3f}   {figures['failed']:.0f}       "
                        f"{figures['server_cpu_us']:.0f}",
                        flush=True,
                    )
    bare_p90, noop_p90 = statistics.median(p90s["bare"]), statistics.median(p90s["noop"])
    print(f"median p90: bare {bare_p90:.3f} ms, noop {noop_p90:.3f} ms, ratio {noop_p90 / bare_p90:.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--server-flags",
        nargs=argparse.REMAINDER,
        default=["--max-batch-delay-ms", "0"],
        help="flags of `etude serve inference` (default: --max-batch-delay-ms 0, no batching wait)",
    )
    parser.add_argument("--serve-bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve_bare is not None:
        asyncio.run(serve_bare(arguments.serve_bare))
    elif arguments.client is not None:
        print(json.dumps(asyncio.run(open_loop(arguments.client, arguments.rate, arguments.seconds))))
    else:
        main(arguments)
