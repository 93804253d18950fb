"""What one load-generator process costs, how far it can drive, and whether it measures what an
independent tool measures.

Starts a no-op RecommenderService (answers Recommend and RecommendStream at once) in a process
of its own on loopback, then, each load-generator run in a process of its own as well (so that
its CPU time is its own):

1. CPU per request of the load generator at 1,000 and 2,000 req/s (the latter `--rounds` times,
   the median printed), each transport (its LoadGenFootprint: process CPU over the run /
   requests sent, ramp included), with its send lateness;
   beside it what openloop_grpc (below) spends per request on the same server in the same run:
   the machine's own cost of a request for a client that sleeps between requests.
2. One load generator pinned to core 0, the server to core 1, at rising rates up to 8,000 req/s:
   the highest rate it holds without falling behind (no request left unsent, send lateness
   p99 <= 1 ms), and its CPU per request there. The server here is benchmarks/noop_grpc_server.c
   (compiled with `cc`; the Python no-op server without a compiler), so that the load generator,
   not the server, is what runs out first.
3. p90 from the actual send at 2,000 req/s against openloop_grpc (benchmarks/openloop_grpc.c, a
   smooth open-loop gRPC client in C, compiled here with `cc`) on the same server in the same run;
   the ratio for each transport. Both take an answer's time from the kernel's receive stamp
   (the load generator's h2 transport when its timed socket is built; grpcio's transports time
   answers when they have parsed them); openloop_grpc's p90 timed at its own wake-up is printed
   beside it, for what the stamp leaves out. Both clients run pinned to core 0 and the server to core 1, as
   in part 2, so that the other work on a shared machine moves them less. On the C server first
   (unary, h2: it serves no RecommendStream), whose own latency stays near 0.1 ms, so the ratio
   is the clients'; then on the Python one (every transport), which runs near its one core's
   limit at 2,000 req/s and swings the p90 of any client from run to run. (h2load, tried before,
   is no reference: its --rps timer fires every 10 ms per connection and sends in bursts.) The
   part is skipped when no C compiler is found.

    .venv/bin/python benchmarks/bench_loadgen.py [--ramp-s 2 --hold-s 10] [--rounds 3] [--parts 1 2 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import NamedTuple

import grpc
from etude.services.loadgen.client import RECOMMEND_PATH, GrpcRecommendClient, open_channel, wait_until_ready
from etude.services.loadgen.generator import LoadGenerator, Session
from etude.services.loadgen.h2_client import TRANSPORT_H2, H2RecommendClient
from etude.services.loadgen.stream_client import GrpcStreamRecommendClient
from google.protobuf import json_format

from etude import event_loop
from etude.v1 import loadgen_pb2, recommender_pb2, recommender_pb2_grpc

# Falling behind: a send later than this at p99 (or any request left unsent).
MAX_LATENESS_P99_MS = 1.0
PINNED_RATES = [1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0]
LOADGEN_CPU, SERVER_CPU = 0, 1
TRANSPORTS = ("unary", "stream", TRANSPORT_H2)


class NoopRecommender(recommender_pb2_grpc.RecommenderServiceServicer):
    """Answers at once with k fixed items: the serving path without a model or a batcher."""

    def _answer(
        self, request: recommender_pb2.RecommendRequest, started_ns: int
    ) -> recommender_pb2.RecommendResponse:
        k = request.k or 21
        return recommender_pb2.RecommendResponse(
            item_ids=range(1, k + 1),
            scores=[0.0] * k,
            timing=recommender_pb2.ServerTiming(
                batch_size=1, server_total_us=(time.perf_counter_ns() - started_ns) // 1000
            ),
            request_id=request.request_id,
        )

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        return self._answer(request, time.perf_counter_ns())

    async def RecommendStream(
        self,
        request_iterator: AsyncIterator[recommender_pb2.RecommendRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[recommender_pb2.RecommendStreamResponse]:
        # Reading and answering run apart (as in the inference service): answers never wait
        # for the next request to be read, nor reads for the previous answer to be written.
        answers: asyncio.Queue[recommender_pb2.RecommendStreamResponse | None] = asyncio.Queue()

        async def read_all() -> None:
            try:
                async for request in request_iterator:
                    response = self._answer(request, time.perf_counter_ns())
                    answers.put_nowait(
                        recommender_pb2.RecommendStreamResponse(
                            request_id=request.request_id, response=response
                        )
                    )
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read_all())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def serve_noop(port_file: Path) -> None:
    from etude.serving import ServiceHost, run_until_signalled, service_full_name

    host = ServiceHost(
        service_names=[service_full_name(recommender_pb2, "RecommenderService")],
        register=lambda server: recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(
            NoopRecommender(), server
        ),
    )
    await run_until_signalled(host, grace_s=1.0, port_file=str(port_file))


async def synthetic_sessions(catalog_size: int = 100_000) -> AsyncIterator[Session]:
    rng = random.Random(7)
    index = 0
    while True:
        length = min(50, int(rng.paretovariate(1.5)))
        yield Session(str(index), [rng.randint(1, catalog_size) for _ in range(length)])
        index += 1


async def drive(
    target: str, rate: float, transport: str, ramp_s: int, hold_s: int, h2_writer: str = "timed"
) -> loadgen_pb2.LoadSummary:
    """One load-generator run (in this process), records written as in a real trial; `h2_writer`
    "event-loop" has the h2 client write from the event loop instead of its timed transport."""
    profile = loadgen_pb2.LoadProfile(target_rate_per_s=rate, ramp_duration_s=ramp_s, hold_duration_s=hold_s)
    if transport == TRANSPORT_H2:
        h2_client = H2RecommendClient(target, timed=h2_writer == "timed")
        await h2_client.connect(10.0)
        try:
            with tempfile.TemporaryDirectory() as records_dir:
                return await LoadGenerator(
                    h2_client, synthetic_sessions(), profile, records_dir=Path(records_dir)
                ).run()
        finally:
            await h2_client.aclose()
    async with open_channel(target) as channel:
        await wait_until_ready(channel, target, 10.0)
        with tempfile.TemporaryDirectory() as records_dir:
            if transport == "stream":
                client = GrpcStreamRecommendClient(channel)
                try:
                    return await LoadGenerator(
                        client, synthetic_sessions(), profile, records_dir=Path(records_dir)
                    ).run()
                finally:
                    await client.aclose()
            return await LoadGenerator(
                GrpcRecommendClient(channel), synthetic_sessions(), profile, records_dir=Path(records_dir)
            ).run()


def run_loadgen(
    target: str, rate: float, transport: str, ramp_s: int, hold_s: int, cpu: int | None = None
) -> loadgen_pb2.LoadSummary:
    """A load-generator run in a child process (optionally pinned to one core); its summary."""
    command = [sys.executable, __file__, "--drive", target, "--rate", str(rate), "--transport", transport]
    command += ["--ramp-s", str(ramp_s), "--hold-s", str(hold_s)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=ramp_s + hold_s + 60)
    return json_format.Parse(output.stdout.strip().splitlines()[-1], loadgen_pb2.LoadSummary())


def print_header() -> None:
    print(
        "      rate transport achieved    sent not_sent errors act_p50 act_p90 act_p99 "
        "late_p50 late_p99 cpu_us/req cores"
    )


def print_row(rate: float, summary: loadgen_pb2.LoadSummary) -> None:
    actual, footprint, late = summary.latency_from_actual, summary.footprint, summary.footprint.send_lateness
    print(
        f"{rate:>10.0f} {summary.transport:>9} {summary.achieved_hold_rate_per_s:>8.0f} "
        f"{summary.requests_sent:>7d} {summary.requests_not_sent:>8d} {summary.requests_failed:>6d} "
        f"{actual.p50_ms:>7.2f} {actual.p90_ms:>7.2f} {actual.p99_ms:>7.2f} {late.p50_ms:>8.3f} "
        f"{late.p99_ms:>8.3f} {footprint.cpu_us_per_request:>10.0f} {footprint.cores_used:>5.2f}",
        flush=True,
    )


def sent_in_full(summary: loadgen_pb2.LoadSummary) -> bool:
    """Every request of the schedule went out, however late (answers are the server's part:
    one Python server process on one core saturates first, and backpressure then stops sends)."""
    return summary.requests_not_sent == 0


def on_schedule(summary: loadgen_pb2.LoadSummary) -> bool:
    return summary.footprint.send_lateness.p99_ms <= MAX_LATENESS_P99_MS


def build_c(folder: Path, name: str) -> Path | None:
    """benchmarks/NAME.c compiled into `folder`, or None without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    binary = folder / name
    source = Path(__file__).with_name(f"{name}.c")
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True, capture_output=True)
    return binary


class ReferenceRun(NamedTuple):
    """What openloop_grpc measured, and what it cost."""

    p90_ms: float  # from the actual send
    ok: int
    failed: int
    lateness_p99_ms: float
    cpu_us_per_request: float  # its process CPU (user + system) / requests sent


def run_reference(
    binary: Path,
    target: str,
    rate: float,
    duration_s: int,
    folder: Path,
    cpu: int | None = None,
    *,
    wake: bool = False,
) -> ReferenceRun:
    """openloop_grpc at `rate` for `duration_s`: an answer's time the kernel's arrival stamp, as
    the load generator's timed transport takes it, or (`wake`) when the client woke to read it."""
    request = recommender_pb2.RecommendRequest(session_id="4711", item_ids=[11, 2_000, 37, 512, 9], k=21)
    message = request.SerializeToString()
    body = folder / "request.grpc"
    # A gRPC message on the wire: uncompressed flag, 4-byte big-endian length, the message.
    body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    latencies_file = folder / "reference-latencies.txt"
    host, _, port = target.rpartition(":")
    command = [
        str(binary),
        host,
        port,
        RECOMMEND_PATH,
        str(rate),
        str(duration_s),
        str(body),
        str(latencies_file),
        *(["wake"] if wake else []),
    ]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    sent, ok, failed, lateness_p99_us = (int(value) for value in output.stdout.split())
    latencies_us = sorted(int(line) for line in latencies_file.read_text().split())
    # Nearest rank, as HdrHistogram reads it.
    p90_us = latencies_us[max(0, int(0.9 * len(latencies_us) + 0.5) - 1)] if latencies_us else 0
    return ReferenceRun(p90_us / 1000.0, ok, failed, lateness_p99_us / 1000.0, 1e6 * cpu_s / max(1, sent))


def measure_all(
    target: str, pinned_target: str, native_target: str, args: argparse.Namespace, folder: Path
) -> None:
    print(
        f"no-op RecommenderService at {target} (its own process; for part 2 a second one pinned to "
        f"core {SERVER_CPU}); each load-generator run in its own "
        f"process; ramp {args.ramp_s} s, hold {args.hold_s} s; achieved = OK answers/s over the hold; "
        "act = latency from the actual send, late = send lateness (actual - intended), ms; "
        "cpu_us/req and cores = the load generator's process CPU over the run (LoadGenFootprint); "
        f"{os.cpu_count()} cores, shared with whatever else runs here"
    )
    if 1 in args.parts:
        measure_cpu_per_request(target, args, folder)
    if 2 in args.parts:
        measure_pinned_limit(pinned_target, native_target, args)
    if 3 in args.parts:
        # On the C server first: it answers in about 0.1 ms at any rate tried here, so the ratio
        # is the clients' alone. The Python server runs near its one core's limit at 2,000 req/s
        # (0.8-0.9 core), where its own queueing swings the p90 from run to run; it is the one
        # that serves RecommendStream.
        servers: list[tuple[str, str, Sequence[str]]] = [("Python no-op", pinned_target, TRANSPORTS)]
        if native_target != pinned_target:
            servers.insert(0, ("noop_grpc_server (C)", native_target, ("unary", TRANSPORT_H2)))
        for server_name, server_target, transports in servers:
            compare_with_reference(server_name, server_target, transports, args, folder)


def measure_cpu_per_request(target: str, args: argparse.Namespace, folder: Path) -> None:
    print("\n1. load-generator CPU per request")
    print_header()
    runs_at_2000: dict[str, list[float]] = {}
    for rate in args.rates:
        # 2,000 req/s, the target's rate, runs `--rounds` times: this machine's cost of a wake-up
        # moves by a third over minutes, more than any one run can tell.
        for _ in range(args.rounds if rate == 2000 else 1):
            for transport in TRANSPORTS:
                summary = run_loadgen(target, rate, transport, args.ramp_s, args.hold_s)
                print_row(rate, summary)
                if rate == 2000:
                    runs_at_2000.setdefault(transport, []).append(summary.footprint.cpu_us_per_request)
    cpu_at_2000 = {transport: statistics.median(runs) for transport, runs in runs_at_2000.items()}
    for transport, runs in runs_at_2000.items():
        print(
            f"   CPU per request at 2,000 req/s, {transport}: {cpu_at_2000[transport]:.0f} us "
            f"(median of {', '.join(f'{cpu_us:.0f}' for cpu_us in runs)}; target <= 100 us)"
        )
    # What this machine charges any client for a request at this rate (wake-ups, loopback TCP):
    # the floor under the load generator's figure, measured in the same run.
    reference = build_c(folder, "openloop_grpc")
    if reference is not None and 2000 in args.rates:
        run = run_reference(reference, target, 2000.0, args.hold_s, folder)
        print(
            f"   the same, openloop_grpc (C, same server, same run): {run.cpu_us_per_request:.0f} us "
            f"({run.ok} OK); ratio h2 / C: {cpu_at_2000.get(TRANSPORT_H2, 0.0) / run.cpu_us_per_request:.1f}x"
        )


def measure_pinned_limit(pinned_target: str, native_target: str, args: argparse.Namespace) -> None:
    print(
        f"\n2. one load generator ({args.pinned_transport}) pinned to core {LOADGEN_CPU}, the server "
        f"({'noop_grpc_server, C' if native_target != pinned_target else 'Python no-op'}) to core "
        f"{SERVER_CPU}: rising rates"
    )
    if (os.cpu_count() or 1) < 2:
        print("   skipped: needs 2 cores")
    else:
        print_header()
        # The highest rate sent in full, and the highest also on schedule (lateness p99 <= 1 ms).
        in_full: tuple[float, loadgen_pb2.LoadSummary] | None = None
        in_time: tuple[float, loadgen_pb2.LoadSummary] | None = None
        for rate in PINNED_RATES:
            summary = run_loadgen(
                native_target, rate, args.pinned_transport, args.ramp_s, args.hold_s, cpu=LOADGEN_CPU
            )
            print_row(rate, summary)
            if not sent_in_full(summary):
                break
            in_full = (rate, summary)
            if on_schedule(summary) and (in_time is None or in_time[0] < rate):
                in_time = (rate, summary)
        for label, reached in (
            ("sent every request of the schedule", in_full),
            (f"also kept send lateness p99 <= {MAX_LATENESS_P99_MS} ms", in_time),
        ):
            if reached is None:
                print(f"   {label}: at no rate tried")
                continue
            rate, summary = reached
            footprint = summary.footprint
            print(
                f"   {label}: up to {rate:.0f} req/s (target 8,000): send lateness p99 "
                f"{footprint.send_lateness.p99_ms:.3f} ms, "
                f"{footprint.cpu_us_per_request:.0f} us CPU per request"
            )


def compare_with_reference(
    server_name: str,
    pinned_target: str,
    transports: Sequence[str],
    args: argparse.Namespace,
    folder: Path,
) -> None:
    print(
        "\n3. p90 from the actual send at 2,000 req/s: the load generator (each transport) vs "
        f"openloop_grpc (C, smooth open loop), one after the other, each pinned to core {LOADGEN_CPU}, "
        f"on the {server_name} server pinned to core {SERVER_CPU}"
    )
    reference = build_c(folder, "openloop_grpc")
    if reference is None:
        print("   skipped: no C compiler found (cc, gcc or clang)")
        return
    ratios: dict[str, list[float]] = {transport: [] for transport in transports}
    for round_index in range(args.rounds):
        summaries = {
            transport: run_loadgen(pinned_target, 2000.0, transport, 0, args.hold_s, cpu=LOADGEN_CPU)
            for transport in ratios
        }
        reference_run = run_reference(reference, pinned_target, 2000.0, args.hold_s, folder, cpu=LOADGEN_CPU)
        # The same client timing its answers at its own wake-up: what the kernel stamp leaves out.
        woken = run_reference(
            reference, pinned_target, 2000.0, args.hold_s, folder, cpu=LOADGEN_CPU, wake=True
        )
        line = (
            f"   round {round_index + 1}: openloop_grpc p90 {reference_run.p90_ms:.3f} ms "
            f"({reference_run.ok} OK, {reference_run.failed} failed, send lateness p99 "
            f"{reference_run.lateness_p99_ms:.2f} ms, {reference_run.cpu_us_per_request:.0f} us CPU/req; "
            f"timed at its wake-up: p90 {woken.p90_ms:.3f} ms)"
        )
        for transport, summary in summaries.items():
            loadgen_p90 = summary.latency_from_actual.p90_ms
            ratio = loadgen_p90 / reference_run.p90_ms if reference_run.p90_ms else float("nan")
            ratios[transport].append(ratio)
            line += (
                f"; {transport} p90 {loadgen_p90:.3f} ms ({summary.requests_ok} OK, "
                f"{summary.footprint.cpu_us_per_request:.0f} us CPU/req), ratio {ratio:.2f}"
            )
        print(line, flush=True)
    for transport, values in ratios.items():
        print(
            f"   median ratio loadgen ({transport}) / openloop_grpc on {server_name}: "
            f"{statistics.median(values):.2f} "
            "(target within 15%: 0.85-1.15)"
        )


def start_server(
    folder: Path, name: str, cpu: int | None, native: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """The Python no-op server, or with `native` the C one (noop_grpc_server), optionally pinned."""
    port_file = folder / f"{name}.port"
    if native is not None:
        response = recommender_pb2.RecommendResponse(item_ids=range(1, 22))
        response.timing.batch_size = 1
        response_file = folder / "response.pb"
        response_file.write_bytes(response.SerializeToString())
        command = [str(native), str(port_file), str(response_file)]
    else:
        command = [sys.executable, __file__, "--serve-noop", str(port_file)]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu}))
        if native is not None and cpu is not None
        else None,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, f"127.0.0.1:{port_file.read_text().strip()}"


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        servers: list[subprocess.Popen[bytes]] = []
        try:
            server, target = start_server(folder, "free", None)
            servers.append(server)
            pinned_server, pinned_target = start_server(folder, "pinned", SERVER_CPU)
            servers.append(pinned_server)
            # Part 2 drives the load generator to its own limit: against a server in C, which
            # answers far more calls per core than any Python server (None: no compiler).
            native = build_c(folder, "noop_grpc_server")
            native_target = pinned_target
            if native is not None:
                native_server, native_target = start_server(folder, "native", SERVER_CPU, native)
                servers.append(native_server)
            measure_all(target, pinned_target, native_target, args, folder)
        finally:
            for server in servers:
                server.terminate()
                server.wait(10)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 2000.0])
    parser.add_argument("--ramp-s", type=int, default=2)
    parser.add_argument("--pinned-transport", default=TRANSPORT_H2, help="the transport of part 2")
    parser.add_argument("--hold-s", type=int, default=10)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs at 2,000 req/s in part 1, rounds of the comparison in part 3",
    )
    parser.add_argument(
        "--parts", type=int, nargs="+", choices=[1, 2, 3], default=[1, 2, 3], help="which parts to run"
    )
    parser.add_argument("--serve-noop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="unary", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    # With --drive: who writes the h2 client's requests (before / after runs of the timed transport).
    parser.add_argument(
        "--h2-writer", choices=["timed", "event-loop"], default="timed", help=argparse.SUPPRESS
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.cpu is not None and (os.cpu_count() or 1) > arguments.cpu:
        os.sched_setaffinity(0, {arguments.cpu})  # taskset -c N, for this process and its threads
    if arguments.serve_noop is not None:
        asyncio.run(serve_noop(arguments.serve_noop))
    elif arguments.drive is not None:
        # On the loop `etude serve loadgen` runs (uvloop where installed).
        summary = event_loop.run(
            drive(
                arguments.drive,
                arguments.rate,
                arguments.transport,
                arguments.ramp_s,
                arguments.hold_s,
                arguments.h2_writer,
            ),
            fast=True,
        )
        print(json_format.MessageToJson(summary, indent=None))
    else:
        main(arguments)
