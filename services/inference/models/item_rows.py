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


def item_rows(init: ItemInit, seed: int, dim: int, item_ids: np.ndarray) -> Tensor:
    """Rows [len(item_ids), dim] fp32 of the given ids (ascending, unique, >= 0); id 0 is zeros.

    Generates every block that holds one of the ids, one block at a time: memory is the output
    plus one block.
    """
    ids = np.asarray(item_ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"item_ids must be 1-D, got shape {ids.shape}")
    if ids.size and (ids[0] < 0 or np.any(np.diff(ids) <= 0)):
        raise ValueError("item_ids must be unique, ascending and >= 0")
    out = torch.empty(ids.size, dim)
    if ids.size == 0:
        return out
    blocks = ids // ROWS_PER_BLOCK
    # Where each block's ids start and end in `ids` (ids ascending, so blocks are too).
    starts = np.flatnonzero(np.concatenate(([True], blocks[1:] != blocks[:-1])))
    ends = np.append(starts[1:], ids.size)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        block = int(blocks[start])
        rows = _block(init, seed, block, dim)
        offsets = torch.from_numpy(ids[start:end] - block * ROWS_PER_BLOCK)
        out[start:end] = rows[offsets]
    return out


def item_range_rows(init: ItemInit, seed: int, dim: int, first: int, stop: int) -> Tensor:
    """Rows of the contiguous ids first..stop-1 ([stop - first, dim] fp32); id 0 is zeros."""
    if not 0 <= first <= stop:
        raise ValueError(f"need 0 <= first <= stop, got {first}..{stop}")
    out = torch.empty(stop - first, dim)
    for block in range(first // ROWS_PER_BLOCK, (stop - 1) // ROWS_PER_BLOCK + 1 if stop > first else 0):
        block_first = block * ROWS_PER_BLOCK
        lo, hi = max(first, block_first), min(stop, block_first + ROWS_PER_BLOCK)
        out[lo - first : hi - first] = _block(init, seed, block, dim)[lo - block_first : hi - block_first]
    return out


def item_table(init: ItemInit, seed: int, catalog_size: int, dim: int) -> Tensor:
    """The whole table [catalog_size + 1, dim] fp32, row 0 zeros: what an unsharded server holds."""
    return item_range_rows(init, seed, dim, 0, catalog_size + 1)
