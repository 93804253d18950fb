"""The whole serving stack with a model that computes nothing: what Etude itself costs.

Runs real experiments through the local driver (loadgen and inference service as child
processes on this machine, exactly as `etude run` does) with the `noop` model at several
rates and batch delays, and prints latency from the intended send time next to the bare
grpc.aio anchor of shared/anchors.md (1,000 req/s at p90 0.85 ms on a 2-core machine).

    .venv/bin/python benchmarks/bench_infrastructure.py [--rates 500 1000 2000] [--delays-ms 0 2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile

from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore

from etude.spec import parse_spec_dict

ANCHOR = "bare grpc.aio, 2 cores: 1,000 req/s at p50 0.6 ms / p90 0.85 ms; 2,000 req/s at p90 1.5 ms"


async def measure(rate: float, delay_ms: float, ramp_s: int, hold_s: int, results: str) -> list[str]:
    spec = resolve(
        parse_spec_dict(
            {
                "name": "infrastructure",
                "models": [{"name": "noop"}],
                "catalog_sizes": [10_000],
                "workload": {"exponents": {"alpha_length": 2.2, "alpha_clicks": 1.8}, "seed": 1},
                "batching": {"max_batch_delay_ms": delay_ms},
                "load": {"target_rate_per_s": rate, "ramp_duration_s": ramp_s, "hold_duration_s": hold_s},
                "results": results,
            }
        )
    )
    store = LocalResultStore(results)
    experiment = new_experiment(spec, store)
    await ExperimentRunner(experiment, LocalDriver(), store).run()
    result = experiment.trials[0]
    if not result.HasField("summary"):
        return [f"{rate:g}", f"{delay_ms:g}", "failed: " + result.error]
    summary = result.summary
    intended, actual = summary.latency_from_intended, summary.latency_from_actual
    return [
        f"{rate:g}",
        f"{delay_ms:g}",
        f"{summary.achieved_hold_rate_per_s:.1f}",
        f"{intended.p50_ms:.2f} / {intended.p90_ms:.2f} / {intended.p99_ms:.2f}",
        f"{actual.p50_ms:.2f} / {actual.p90_ms:.2f} / {actual.p99_ms:.2f}",
        f"{summary.server_queue.p50_ms:.2f}",
        f"{summary.network_and_overhead.p50_ms:.2f}",
        f"{summary.mean_batch_size:.2f}",
        str(summary.requests_failed + summary.requests_not_sent),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[0, 2])
    parser.add_argument("--ramp-s", type=int, default=5)
    parser.add_argument("--hold-s", type=int, default=15)
    args = parser.parse_args()
    header = [
        "rate/s", "delay ms", "ok/s hold", "intended p50/p90/p99 ms", "actual p50/p90/p99 ms",
        "queue p50", "net p50", "batch", "failed+not sent",
    ]  # fmt: skip
    print(" | ".join(header))
    with tempfile.TemporaryDirectory() as results:
        for rate in args.rates:
            for delay_ms in args.delays_ms:
                row = await measure(rate, delay_ms, args.ramp_s, args.hold_s, results)
                print(" | ".join(row), flush=True)
    print(f"anchor: {ANCHOR}")


if __name__ == "__main__":
    asyncio.run(main())
