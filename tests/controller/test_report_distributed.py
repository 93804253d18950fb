"""The report's "Distributed inference" section: a sharded trial next to the unsharded trial of
its scenario, with the router's fan-out, the shards' compute, the bytes, the memory each server
measured of itself and the largest catalog that memory implies."""

from __future__ import annotations

from etude.services.report.analysis import Timings
from etude.services.report.capacity import SERVER_MEMORY_BYTES, largest_catalog
from etude.services.report.distributed import distributed_blocks
from etude.services.report.document import Heading, Table
from etude.services.report.trials import TrialReport

from etude.v1 import environment_pb2, experiment_pb2, loadgen_pb2

MIB = 2**20


def _report(
    trial_id: str,
    shards: int,
    p90_ms: float,
    timings: Timings | None = None,
    memory: list[environment_pb2.ServerMemory] | None = None,
) -> TrialReport:
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
    result = experiment_pb2.TrialResult(trial=trial, summary=summary, server_memory=memory or [])
    return TrialReport(result, timings=timings)


def _server(
    name: str, rows: int, bytes_per_row: int, startup_mib: int = 250, serving_mib: int = 0
) -> environment_pb2.ServerMemory:
    """A server whose build took `bytes_per_row` per row at its peak, and serving `serving_mib`
    more above that peak."""
    startup = startup_mib * MIB
    built_peak = startup + rows * bytes_per_row
    return environment_pb2.ServerMemory(
        server=name,
        startup_resident_bytes=startup,
        built_peak_resident_bytes=built_peak,
        built_resident_bytes=startup + rows * 128,
        peak_resident_bytes=built_peak + serving_mib * MIB,
        resident_bytes=startup + rows * 128 + serving_mib * MIB,
        table_bytes=rows * 32 * 4,
        rows_held=rows,
    )


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
    assert cells["rows per shard"] == "250,000" and cells["table MiB per shard (computed)"] == "30.5"
    # Nothing measured: no largest catalog, and no table of memory per server.
    assert cells["largest catalog at 8 GiB per server (measured)"] == "-"
    assert [block for block in blocks if isinstance(block, Heading) and block.level == 3] == []


def test_no_section_without_sharded_trials() -> None:
    assert distributed_blocks([_report("one", 0, 20.0)]) == []


def test_the_largest_catalog_comes_from_the_memory_each_server_measured() -> None:
    # Four shards of 250,000 rows; shard 3 grew most per row (500 bytes), and sets the pace.
    shards = [_server(f"shard {i}/4", 250_000, 400 if i < 3 else 500, serving_mib=100) for i in range(4)]
    router = environment_pb2.ServerMemory(
        server="router",
        startup_resident_bytes=200 * MIB,
        peak_resident_bytes=300 * MIB,
        resident_bytes=290 * MIB,
    )
    sharded = _report("four", 4, 25.0, memory=[router, *shards])
    one = _report("one", 0, 20.0, memory=[_server("inference", 1_000_001, 200)])
    blocks = distributed_blocks([one, sharded])
    table = next(block for block in blocks if isinstance(block, Table))
    cells = dict(zip(table.header, table.rows[0], strict=True))
    # What a server has for its rows beside its runtime (and, for the shards, serving's 100 MiB).
    shard_room, one_room = SERVER_MEMORY_BYTES - 350 * MIB, SERVER_MEMORY_BYTES - 250 * MIB
    assert cells["largest catalog at 8 GiB per server (measured)"] == f"{shard_room // 500 * 4:,}"
    assert cells["unsharded: largest catalog at 8 GiB (measured)"] == f"{one_room // 200 - 1:,}"
    # Each server's own figures, the sharded trial's first, then its unsharded counterpart's.
    assert Heading(3, "Memory per server (measured)") in blocks
    memory = [block for block in blocks if isinstance(block, Table)][1]
    servers = [dict(zip(memory.header, row, strict=True)) for row in memory.rows]
    assert [(row["trial"], row["server"]) for row in servers] == [
        ("four", "router"), *[("four", f"shard {i}/4") for i in range(4)], ("one", "inference"),
    ]  # fmt: skip
    assert servers[0]["peak MiB"] == "300.0" and servers[0]["bytes per row (measured)"] == "-"
    assert (
        servers[1]["MiB building tables"] == f"{250_000 * 400 / MIB:,.1f}"
        and servers[1]["MiB serving"] == "100.0"
    )
    assert servers[1]["bytes per row (measured)"] == "400" and servers[4]["bytes per row (measured)"] == "500"
    assert servers[5]["rows held"] == "1,000,001" and servers[5]["MiB before tables"] == "250.0"


def test_a_replicated_share_and_an_unmeasured_shard_change_the_largest_catalog() -> None:
    trial = experiment_pb2.Trial(
        catalog_size=1_000_000,
        hardware=experiment_pb2.HardwareOption(device="cpu", catalog_shards=2, shard_strategy="popular"),
    )
    # Popular: each shard also holds the other's 10,000 hot rows (1,020,000 rows for 1M items).
    shards = [_server(f"shard {i}/2", 510_000, 400) for i in range(2)]
    fits = (SERVER_MEMORY_BYTES - 250 * MIB) // 400
    assert largest_catalog(trial, shards) == fits * 2 * 1_000_000 // 1_020_000
    assert largest_catalog(trial, shards[:1]) is None  # one shard did not answer
    unsharded_on_gpu = experiment_pb2.Trial(
        catalog_size=1_000_000, hardware=experiment_pb2.HardwareOption(device="cuda")
    )
    # The rows sit in GPU memory, which the resident figures do not count.
    assert largest_catalog(unsharded_on_gpu, [_server("inference", 1_000_001, 8)]) is None
