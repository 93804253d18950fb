"""Item embedding rows that do not depend on how the catalog is split.

Row i of a model's item table is drawn from a generator seeded by (seed, i // ROWS_PER_BLOCK),
never from the global random stream, so a shard holding any subset of the items generates
exactly the rows an unsharded server holds, and the encoder's other weights (drawn from the
global stream) do not depend on the catalog size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Rows per seeded block: large enough that a block's generator costs nothing next to its draws,
# small enough that a shard holding scattered items (hash strategy) wastes little per block.
ROWS_PER_BLOCK = 8192
_MASK_64 = (1 << 64) - 1
# Ids checked per step by item_rows (bounds its temporaries whatever the number of ids).
_CHECK_STEP = 1 << 16


@dataclass(frozen=True)
class ItemInit:
    """The distribution of a model's item rows: `normal` (scale = std) or `uniform` (+-scale)."""

    distribution: str
    scale: float

    def __post_init__(self) -> None:
        if self.distribution not in ("normal", "uniform"):
            raise ValueError(f"distribution must be 'normal' or 'uniform', got {self.distribution!r}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")

    @classmethod
    def xavier_normal(cls, rows: int, dim: int) -> ItemInit:
        """torch's xavier_normal_ of a [rows, dim] table: std sqrt(2 / (rows + dim))."""
        return cls("normal", math.sqrt(2.0 / (rows + dim)))

    def describe(self) -> str:
        return f"{self.distribution}({self.scale:.6g})"


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK_64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK_64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK_64
    return value ^ (value >> 31)


def block_seed(seed: int, block: int) -> int:
    """The 64-bit seed of block `block` (rows block * ROWS_PER_BLOCK onwards) for model seed `seed`."""
    return _splitmix64(_splitmix64(seed & _MASK_64) ^ block)


def _block(init: ItemInit, seed: int, block: int, dim: int) -> Tensor:
    generator = torch.Generator().manual_seed(block_seed(seed, block))
    if init.distribution == "normal":
        rows = torch.randn(ROWS_PER_BLOCK, dim, generator=generator).mul_(init.scale)
    else:
        rows = torch.rand(ROWS_PER_BLOCK, dim, generator=generator).mul_(2 * init.scale).sub_(init.scale)
    if block == 0:
        rows[0].zero_()  # item 0 is padding
    return rows


def item_rows(init: ItemInit, seed: int, dim: int, item_ids: np.ndarray, out: Tensor | None = None) -> Tensor:
    """Rows [len(item_ids), dim] fp32 of the given ids (ascending, unique, >= 0); id 0 is zeros.

    Generates every block that holds one of the ids, one block at a time, into `out` when given
    (fp32 [len(item_ids), dim], e.g. a slice of a preallocated table): memory is the output
    plus one block, never a second copy of the rows.
    """
    ids = np.asarray(item_ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"item_ids must be 1-D, got shape {ids.shape}")
    _require_ascending(ids)
    out = _output(out, ids.size, dim)
    if ids.size == 0:
        return out
    # Where each block's ids start in `ids` (ascending): one entry per block, not per id.
    first_block, last_block = int(ids[0]) // ROWS_PER_BLOCK, int(ids[-1]) // ROWS_PER_BLOCK
    block_firsts = np.arange(first_block, last_block + 2, dtype=np.int64) * ROWS_PER_BLOCK
    bounds = np.searchsorted(ids, block_firsts).tolist()
    for block, start, end in zip(range(first_block, last_block + 1), bounds[:-1], bounds[1:], strict=True):
        if start == end:
            continue  # none of the ids in this block: nothing to draw
        rows = _block(init, seed, block, dim)
        offsets = torch.from_numpy(ids[start:end] - block * ROWS_PER_BLOCK)
        torch.index_select(rows, 0, offsets, out=out[start:end])
    return out


def _require_ascending(ids: np.ndarray) -> None:
    """Raises unless `ids` are unique, ascending and >= 0; checked a step at a time so that the
    temporaries stay small beside a shard's millions of ids."""
    if ids.size and ids[0] < 0:
        raise ValueError("item_ids must be unique, ascending and >= 0")
    for start in range(0, ids.size, _CHECK_STEP):
        if np.any(np.diff(ids[start : start + _CHECK_STEP + 1]) <= 0):
            raise ValueError("item_ids must be unique, ascending and >= 0")


def item_range_rows(
    init: ItemInit, seed: int, dim: int, first: int, stop: int, out: Tensor | None = None
) -> Tensor:
    """Rows of the contiguous ids first..stop-1 ([stop - first, dim] fp32); id 0 is zeros.
    Written into `out` when given (fp32 [stop - first, dim]), block by block, as item_rows."""
    if not 0 <= first <= stop:
        raise ValueError(f"need 0 <= first <= stop, got {first}..{stop}")
    out = _output(out, stop - first, dim)
    for block in range(first // ROWS_PER_BLOCK, (stop - 1) // ROWS_PER_BLOCK + 1 if stop > first else 0):
        block_first = block * ROWS_PER_BLOCK
        lo, hi = max(first, block_first), min(stop, block_first + ROWS_PER_BLOCK)
        out[lo - first : hi - first] = _block(init, seed, block, dim)[lo - block_first : hi - block_first]
    return out


def _output(out: Tensor | None, rows: int, dim: int) -> Tensor:
    """`out` checked to take `rows` fp32 rows of width `dim` in place, or a new such tensor."""
    if out is None:
        return torch.empty(rows, dim)
    if (
        out.shape != (rows, dim)
        or out.dtype != torch.float32
        or out.device.type != "cpu"
        or not out.is_contiguous()
    ):
        raise ValueError(
            f"out must be a contiguous CPU fp32 [{rows}, {dim}] tensor, "
            f"got {out.dtype} {list(out.shape)} on {out.device}"
        )
    return out


def item_table(init: ItemInit, seed: int, catalog_size: int, dim: int) -> Tensor:
    """The whole table [catalog_size + 1, dim] fp32, row 0 zeros: what an unsharded server holds."""
    return item_range_rows(init, seed, dim, 0, catalog_size + 1)
