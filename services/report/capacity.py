"""The largest catalog a configuration holds, from the memory its servers measured of themselves
(TrialResult.server_memory): what each server needs before its tables, per item row to build
them, and to serve; extrapolated linearly in the rows."""

from __future__ import annotations

from collections.abc import Sequence

from etude.v1 import environment_pb2, experiment_pb2

# What one server may use: the memory limit deploy/kustomize gives a CPU pod (the cpu overlay's
# inference pod and the catalog-shards component's shard pods).
SERVER_MEMORY_BYTES = 8 * 2**30
SERVER_MEMORY_LABEL = "8 GiB"


def bytes_per_row(memory: environment_pb2.ServerMemory) -> float | None:
    """What building the server's item rows cost per row: (peak RSS right after building them -
    RSS before) / rows, transient copies included. None without rows or readings."""
    grown = memory.built_peak_resident_bytes - memory.startup_resident_bytes
    if memory.rows_held <= 0 or memory.startup_resident_bytes <= 0 or grown <= 0:
        return None
    return grown / memory.rows_held


def serving_bytes(memory: environment_pb2.ServerMemory) -> int:
    """What serving added above the build's peak (warm-up, batches, score buffers): bounded by
    the batch size and the score chunk, not by the catalog."""
    return max(0, memory.peak_resident_bytes - memory.built_peak_resident_bytes)


def rows_that_fit(
    memory: environment_pb2.ServerMemory, server_bytes: int = SERVER_MEMORY_BYTES
) -> int | None:
    """Item rows one such server holds in `server_bytes`: the room beside what it needs before its
    tables and for serving, at its measured cost per row. Serving is added on top of the build's
    peak although the build's transient copies are gone by then: an estimate on the safe side."""
    per_row = bytes_per_row(memory)
    if per_row is None:
        return None
    room = server_bytes - memory.startup_resident_bytes - serving_bytes(memory)
    return max(0, int(room // per_row))


def largest_catalog(
    trial: experiment_pb2.Trial,
    memory: Sequence[environment_pb2.ServerMemory],
    server_bytes: int = SERVER_MEMORY_BYTES,
) -> int | None:
    """Items the trial's configuration could serve with `server_bytes` per server, extrapolated
    from its measured memory; None where it was not measured (or the rows sit on a GPU, whose
    memory the resident figures do not count).

    Sharded: the fullest shard sets the pace, N shards hold N times its rows, less the share the
    layout replicates (the trial's rows held / its catalog). One server: its rows, less padding.
    """
    if trial.hardware.catalog_shards >= 2:
        shards = [m for m in memory if m.server.startswith("shard ")]
        fits = [rows_that_fit(shard, server_bytes) for shard in shards]
        if len(shards) != trial.hardware.catalog_shards or any(rows is None for rows in fits):
            return None
        rows_held = sum(shard.rows_held for shard in shards)
        fewest = min(rows for rows in fits if rows is not None)
        return int(fewest * len(shards) * trial.catalog_size // rows_held)
    if trial.hardware.device not in ("", "cpu"):
        return None
    whole = [m for m in memory if m.server == "inference"]
    rows = rows_that_fit(whole[0], server_bytes) if whole else None
    return None if rows is None else max(0, rows - 1)
