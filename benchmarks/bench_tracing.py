"""What tracing costs: the noop model at 1,000 req/s with tracing off, at 1% and at 100% sampling.

For each mode a real `etude serve inference --model noop` process and a load-generator process
(the loadgen library: LoadGenerator + GrpcRecommendClient) run with the environment an
experiment gives them (ETUDE_TRACE_FILE, ETUDE_TRACE_SAMPLE_RATIO; "off" sets neither).
Prints p50/p90 of the hold phase (latency from the intended send time, from records.csv), the
CPU per request of each process during the load, and the traced requests written. Modes are
interleaved over rounds so that a noisy neighbour hits every mode alike.

    .venv/bin/python benchmarks/bench_tracing.py [--rate 1000 --ramp-s 2 --hold-s 10 --rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = (("off", None), ("1%", 0.01), ("100%", 1.0))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a child process, from /proc (resolution: one clock tick)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def trace_env(ratio: float | None, folder: Path, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETUDE_TRACE", "OTEL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    if ratio is not None:
        env["ETUDE_TRACE_FILE"] = str(folder / f"traces-{service}.jsonl")
        env["ETUDE_TRACE_SAMPLE_RATIO"] = str(ratio)
    return env


def run_mode(name: str, ratio: float | None, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="etude-bench-tracing-") as tmp:
        folder = Path(tmp)
        port_file = folder / "port"
        log = (folder / "inf.log").open("w")
        inference = subprocess.Popen(
            [sys.executable, "-m", "etude.services.cli", "serve", "inference", "--model", "noop",
             "--catalog-size", str(args.catalog_size), "--max-batch-delay-ms", str(args.max_batch_delay_ms),
             "--port", "0", "--port-file", str(port_file), "--log-format", "json"],
            env=trace_env(ratio, folder, "inference"), stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not port_file.exists():
                if inference.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "inf.log").read_text()[-2000:])
                time.sleep(0.05)
            time.sleep(0.5)  # health: the port file is written once serving
            target = f"127.0.0.1:{port_file.read_text().strip()}"
            inference_cpu_before = process_cpu_s(inference.pid)
            loadgen = subprocess.run(
                [sys.executable, __file__, "--loadgen", target, "--rate", str(args.rate),
                 "--ramp-s", str(args.ramp_s), "--hold-s", str(args.hold_s), "--records", str(folder)],
                env=trace_env(ratio, folder, "loadgen"), capture_output=True, text=True, check=True,
            )  # fmt: skip
            inference_cpu = process_cpu_s(inference.pid) - inference_cpu_before
        finally:
            inference.send_signal(signal.SIGTERM)
            inference.wait(30)
            log.close()
        result = json.loads(loadgen.stdout.strip().splitlines()[-1])
        from etude.services.report.slo import hold_phase_latencies_ms
        from etude.services.report.traces import parse_spans, trace_split
        from etude.services.results.records import read_records

        records = read_records(folder / "records.csv")
        hold = hold_phase_latencies_ms(records, args.ramp_s)
        traced = 0
        if ratio is not None:
            spans = []
            for service in ("inference", "loadgen"):
                path = folder / f"traces-{service}.jsonl"
                if path.exists():
                    spans += parse_spans(path.read_text())[0]
            split = trace_split(spans, records)
            traced = split.matched
        sent = max(1, result["sent"])
        return {
            "p50_ms": float(np.percentile(hold, 50)),
            "p90_ms": float(np.percentile(hold, 90)),
            "ok_per_s": result["hold_ok_per_s"],
            "loadgen_cpu_us": 1e6 * result["cpu_s"] / sent,
            "inference_cpu_us": 1e6 * inference_cpu / sent,
            "traced": traced,
            "sent": sent,
        }


async def loadgen_main(args: argparse.Namespace) -> None:
    """The load-generator process of one mode: configures tracing from its environment."""
    from etude.services.loadgen.client import GrpcRecommendClient, open_channel, wait_until_ready
    from etude.services.loadgen.generator import LoadGenerator
    from etude.services.loadgen.sessions import in_process_sessions

    from etude.telemetry import configure_tracing
    from etude.v1 import loadgen_pb2, workload_pb2

    configure_tracing("etude-loadgen")
    workload = workload_pb2.WorkloadSpec(
        catalog_size=args.catalog_size,
        seed=42,
        exponents=workload_pb2.PowerLawExponents(alpha_length=2.2, alpha_clicks=1.8),
    )
    profile = loadgen_pb2.LoadProfile(
        target_rate_per_s=args.rate, ramp_duration_s=args.ramp_s, hold_duration_s=args.hold_s
    )
    async with open_channel(args.loadgen) as channel:
        await wait_until_ready(channel, args.loadgen, 10.0)
        generator = LoadGenerator(
            GrpcRecommendClient(channel),
            in_process_sessions(workload),
            profile,
            records_dir=Path(args.records),
        )
        cpu_before = time.process_time()
        summary = await generator.run()
        cpu_s = time.process_time() - cpu_before
    print(
        json.dumps(
            {"sent": summary.requests_sent, "hold_ok_per_s": summary.achieved_hold_rate_per_s, "cpu_s": cpu_s}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--ramp-s", type=int, default=2)
    parser.add_argument("--hold-s", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--catalog-size", type=int, default=10_000)
    parser.add_argument("--max-batch-delay-ms", type=float, default=2.0)
    parser.add_argument("--loadgen", default="", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--records", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        asyncio.run(loadgen_main(args))
        return
    print(
        f"noop model, {args.catalog_size:,} items, {args.rate:g} req/s (ramp {args.ramp_s} s, hold "
        f"{args.hold_s} s), max batch delay {args.max_batch_delay_ms:g} ms, {args.rounds} rounds; "
        f"p50/p90 ms over the hold phase from intended send; CPU us per request sent; {os.cpu_count()} cores"
    )
    print(f"{'mode':>5} {'round':>5} {'ok/s':>7} {'p50':>6} {'p90':>6} {'lg cpu':>7} {'inf cpu':>7} traced")
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in MODES}
    for round_index in range(args.rounds):
        for name, ratio in MODES:
            r = run_mode(name, ratio, args)
            results[name].append(r)
            print(
                f"{name:>5} {round_index + 1:>5} {r['ok_per_s']:>7.1f} {r['p50_ms']:>6.2f} "
                f"{r['p90_ms']:>6.2f} {r['loadgen_cpu_us']:>7.0f} {r['inference_cpu_us']:>7.0f} "
                f"{r['traced']:>6.0f}",
                flush=True,
            )
    print("\nmedian over rounds (p90 change relative to off):")
    base = float(np.median([r["p90_ms"] for r in results["off"]]))
    for name, _ in MODES:
        p90 = float(np.median([r["p90_ms"] for r in results[name]]))
        cpu = float(np.median([r["loadgen_cpu_us"] + r["inference_cpu_us"] for r in results[name]]))
        print(
            f"{name:>5}: p90 {p90:.2f} ms ({100 * (p90 / base - 1):+.1f}%), "
            f"CPU {cpu:.0f} us/request (both processes)"
        )


if __name__ == "__main__":
    main()
