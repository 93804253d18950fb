"""A serving process's own memory, as the kernel counts it (resident now and its peak), and the
ServerMemory message a server reports it in: the measured memory per server of a configuration.

Linux: /proc/self/status (VmRSS, VmHWM). Elsewhere the peak comes from getrusage and the
resident figure is 0 (unknown); nothing here needs psutil.
"""

from __future__ import annotations

import gc
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from etude.v1 import environment_pb2

_STATUS = Path("/proc/self/status")
_KIB = 1024


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """Resident bytes now and the highest they have been since the process started."""

    resident_bytes: int
    peak_resident_bytes: int


def own_memory() -> MemoryReading:
    """This process's resident and peak resident bytes."""
    try:
        status = _STATUS.read_text()
    except OSError:
        # ru_maxrss is in KiB on Linux, in bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return MemoryReading(0, peak if sys.platform == "darwin" else peak * _KIB)
    fields = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * _KIB  # "VmRSS:   123456 kB"
    resident = fields.get("VmRSS", 0)
    return MemoryReading(resident, max(fields.get("VmHWM", 0), resident))


def memory_before_tables(model: str | None) -> MemoryReading:
    """This process's memory once it is ready to build `model`'s tables: a throwaway two-item
    model of that kind, without an item table, is built first, so that what the model's code
    loads on first use (tens of MB of modules, whatever the catalog) is not charged to the rows.
    `model` None (a model file): the memory as it is now."""
    if model:
        from .models import build_model

        try:
            build_model(model, 2, 8, seed=0, item_table=False)
        except (ValueError, TypeError, RuntimeError):
            pass  # a measurement aid only: the real build reports what is wrong with the model
        gc.collect()
    return own_memory()


def tensor_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (a view or a tied weight counted once);
    meta tensors (never allocated) count 0."""
    seen: dict[tuple[str, int], int] = {}
    for tensor in tensors:
        if tensor.is_meta:
            continue
        storage = tensor.untyped_storage()
        seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def item_table_bytes(holders: list[object], rows: int) -> int:
    """Bytes of the item tables among `holders`' tensors (a module's parameters and buffers, an
    object's tensor attributes and those of the objects it holds, e.g. a scorer wrapping another
    scorer): those with `rows` or `rows` - 1 rows (with or without the padding row), each
    storage counted once."""
    tensors = [tensor for holder in holders for tensor in _held_tensors(holder, _HOLDER_DEPTH)]
    return tensor_bytes([t for t in tensors if t.dim() >= 1 and t.shape[0] in (rows, rows - 1)])


# How deep item_table_bytes looks through plain objects' attributes: a scorer (CORE's cosine
# head) holding the CatalogScorer that holds its normalised table.
_HOLDER_DEPTH = 2


def _held_tensors(holder: object, depth: int) -> list[torch.Tensor]:
    if isinstance(holder, torch.Tensor):
        return [holder]
    if isinstance(holder, torch.nn.Module):
        return [*holder.parameters(), *holder.buffers()]
    if depth == 0 or isinstance(holder, type) or not hasattr(holder, "__dict__"):
        return []
    return [tensor for value in vars(holder).values() for tensor in _held_tensors(value, depth - 1)]


def server_memory(
    server: str, startup: MemoryReading, built: MemoryReading, table_bytes: int, rows_held: int
) -> environment_pb2.ServerMemory:
    """The message a server answers with: its memory now, beside what it held before its tables
    (`startup`) and right after building them (`built`)."""
    now = own_memory()
    return environment_pb2.ServerMemory(
        server=server,
        resident_bytes=now.resident_bytes,
        peak_resident_bytes=now.peak_resident_bytes,
        startup_resident_bytes=startup.resident_bytes,
        table_bytes=table_bytes,
        rows_held=rows_held,
        built_resident_bytes=built.resident_bytes,
        built_peak_resident_bytes=built.peak_resident_bytes,
    )
