"""The load generator's own work per request (transport h2), without sockets and without the
kernel: what the Python code costs, apart from what the machine charges for waking it up.

Each request goes the real way through LoadGenerator._send, the h2 client's framing, a fake
transport, the client's handling of a canned gRPC answer (the payloads of the frames a server
sends: HEADERS, DATA, trailers, HPACK-indexed as after the first answer; handed over split, as
the timed transport does), LoadGenerator._complete
and the records writer (records.csv in a temporary folder, its writer thread included). The
CPU time of the process (every thread) is divided by the requests.

Two ways, each `--rounds` times (the median printed):

- hot: requests back to back, as fast as they go;
- paced: one request, then `--gap-ms` of sleep, as at 2,000 req/s, where the process sleeps
  between requests; the sleep's own cost (measured alone, the same number of times) is taken
  off. On a virtual machine, code that runs right after a wake-up runs slower (caches and
  predictors cold, the core perhaps clocked down): the ratio paced / hot is what the machine
  charges on top of the code's own cost, at every request of a real run.

    .venv/bin/python benchmarks/bench_loadgen_work.py [--requests 20000] [--rounds 5] [--gap-ms 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import hpack
from bench_loadgen import synthetic_sessions
from etude.services.loadgen import h2_frames as h2
from etude.services.loadgen.generator import LoadGenerator, _ActiveSession
from etude.services.loadgen.h2_client import H2RecommendClient, _Connection

from etude import event_loop
from etude.v1 import loadgen_pb2, recommender_pb2


class HeldWrites:
    """A transport that keeps the last bytes written (the request's frames) and sends nothing."""

    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def close(self) -> None:
        pass


class CannedAnswers:
    """A server's answer to any stream: the frames a gRPC server writes, HPACK-indexed."""

    def __init__(self) -> None:
        encoder = hpack.Encoder()
        headers = [(":status", "200"), ("content-type", "application/grpc")]
        trailers = [("grpc-status", "0"), ("grpc-message", "")]
        # The first answer adds the fields to the table; every later one refers to them.
        self.first = (encoder.encode(headers), encoder.encode(trailers))
        self.later = (encoder.encode(headers), encoder.encode(trailers))
        response = recommender_pb2.RecommendResponse(item_ids=range(1, 22), scores=[0.5] * 21)
        response.timing.batch_size, response.timing.server_total_us = 4, 180
        self.message = h2.grpc_message(response.SerializeToString())

    def to(self, stream_id: int) -> tuple[bytes, bytes, bytes]:
        """The payloads of the answer's three frames, as the timed transport hands them over."""
        headers, trailers = self.first if stream_id == 1 else self.later
        return headers, self.message, trailers


async def cpu_us_per_request(requests: int, gap_s: float) -> float:
    """Process CPU per request over `requests` requests, `gap_s` of sleep before each."""
    client = H2RecommendClient("127.0.0.1:1", request_spans=False)
    client._loop = asyncio.get_running_loop()
    transport = HeldWrites()
    connection = _Connection(client, client._header_block)
    connection._transport = transport  # type: ignore[assignment]
    connection.usable = True
    connection._send_window = 2**62  # no WINDOW_UPDATE comes from a fake server
    client._round_robin.append(connection)
    answers = CannedAnswers()
    profile = loadgen_pb2.LoadProfile(target_rate_per_s=2000, ramp_duration_s=0, hold_duration_s=10)
    with tempfile.TemporaryDirectory() as folder:
        generator = LoadGenerator(client, synthetic_sessions(), profile, records_dir=Path(folder))
        files = generator._files
        assert files is not None
        await files.open(generator._run_info(time.perf_counter_ns(), time.time_ns()))
        for _ in range(100):
            await generator._refill()
        gc.collect()
        started_s = time.process_time()
        while generator._sent < requests:
            if not generator._ready:
                session = generator._sessions.take_nowait()
                if session is None:
                    await generator._refill()  # the session source, as in a run: counted
                    continue
                generator._ready.append(_ActiveSession(session))
            if gap_s:
                time.sleep(gap_s)  # noqa: ASYNC251 (the process must go idle, as between requests)
            elif generator._sent % 64 == 0:
                await asyncio.sleep(0)  # the loop's own turns (the session source's task)
            generator._send(generator._ready.popleft(), 0, time.perf_counter_ns())
            stream_id = int.from_bytes(transport.last[5:9], "big")
            connection.answered(time.perf_counter_ns(), stream_id, *answers.to(stream_id))
        generator._record_latencies()
        files.write(generator._take_rows())
        await files.close(loadgen_pb2.LoadSummary())
        cpu_s = time.process_time() - started_s
        if client._timer is not None:
            client._timer.cancel()
        await generator._sessions.aclose()
    if generator._ok != requests:
        sys.exit(f"only {generator._ok} of {requests} requests ended OK: the harness is broken")
    return 1e6 * cpu_s / requests


def sleep_cost_us(count: int, gap_s: float) -> float:
    started_s = time.process_time()
    for _ in range(count):
        time.sleep(gap_s)
    return 1e6 * (time.process_time() - started_s) / count


def main(args: argparse.Namespace) -> None:
    gap_s = args.gap_ms / 1000
    paced_requests = max(1, args.requests // 4)
    hot, paced, sleeps = [], [], []
    for _ in range(args.rounds):
        hot.append(event_loop.run(cpu_us_per_request(args.requests, 0.0), fast=True))
        sleeps.append(sleep_cost_us(paced_requests, gap_s))
        paced.append(event_loop.run(cpu_us_per_request(paced_requests, gap_s), fast=True) - sleeps[-1])
    print(
        f"load generator's own work per request (h2, fake transport, records written), "
        f"median of {args.rounds} rounds, process CPU in us"
    )
    print(f"   hot ({args.requests} back to back): {statistics.median(hot):.1f}   rounds {_round(hot)}")
    print(
        f"   paced ({paced_requests}, {args.gap_ms:g} ms sleep before each, the sleep's "
        f"{statistics.median(sleeps):.1f} us taken off): {statistics.median(paced):.1f}   "
        f"rounds {_round(paced)}"
    )
    print(f"   paced / hot: {statistics.median(paced) / statistics.median(hot):.1f}x")


def _round(values: list[float]) -> str:
    return " ".join(f"{value:.1f}" for value in values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gap-ms", type=float, default=0.5)
    main(parser.parse_args())
