"""The report's "Distributed inference" section: a sharded trial next to the unsharded trial of
its scenario, with the router's fan-out, the shards' compute, the bytes and the memory per shard."""

from __future__ import annotations

from etude.services.report.analysis import Timings
from etude.services.report.distributed import distributed_blocks
from etude.services.report.document import Heading, Table
from etude.services.report.trials import TrialReport

from etude.v1 import experiment_pb2, loadgen_pb2


def _report(trial_id: str, shards: int, p90_ms: float, timings: Timings | None = None) -> TrialReport:
    hardware = experiment_pb2.HardwareOption(name=trial_id, device="cpu", catalog_shards=shards)
    if shards:
        hardware.shard_strategy = "hash"
    trial = experiment_pb2.Trial(
        trial_id=trial_id,
        model=experiment_pb2.ModelSpec(name="gru4rec"),
        catalog_size=1_000_000,
        embedding_dim=32,
        hardware=hardware,
        runtime="eager",
    )
    summary = loadgen_pb2.LoadSummary(
        latency_from_intended=loadgen_pb2.LatencyPercentiles(
            p50_ms=p90_ms / 2, p90_ms=p90_ms, p99_ms=2 * p90_ms
        )
    )
    return TrialReport(experiment_pb2.TrialResult(trial=trial, summary=summary), timings=timings)


def test_a_sharded_trial_is_shown_against_the_unsharded_one_of_its_scenario() -> None:
    timings = Timings(
        100,
        {"shard_fanout_us": 4.0, "shard_compute_us": 1.5},
        {"shard_fanout_us": 6.0, "shard_compute_us": 2.0},
        shard_wire_bytes_p50=1180.0,
    )
    blocks = distributed_blocks([_report("one", 0, 20.0), _report("four", 4, 25.0, timings)])
    assert blocks[0] == Heading(2, "Distributed inference")
    table = next(block for block in blocks if isinstance(block, Table))
    (row,) = table.rows
    cells = dict(zip(table.header, row, strict=True))
    assert cells["shards"] == "4 x hash"
    assert cells["p50 / p90 / p99 ms"] == "12.5 / 25.0 / 50.0"
    assert cells["unsharded p50 / p90 / p99 ms"] == "10.0 / 20.0 / 40.0"
    assert cells["p90 ratio"] == "1.25"
    assert cells["fan-out p50 / p90 ms"] == "4.00 / 6.00" and cells["bytes/request p50"] == "1,180"
    assert cells["rows per shard"] == "250,000" and cells["table MiB per shard"] == "30.5"


def test_no_section_without_sharded_trials() -> None:
    assert distributed_blocks([_report("one", 0, 20.0)]) == []
