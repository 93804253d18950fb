"""Random padded session batches for the model tests (the recommender's layout: right-padded
with 0, real items at positions 0..len-1)."""

from __future__ import annotations

import torch
from torch import Tensor

from etude.defaults import MAX_SESSION_LENGTH


def random_padded_batch(
    batch_size: int,
    seed: int,
    catalog_size: int,
    *,
    lengths: list[int] | None = None,
    max_length: int | None = None,
    width: int = MAX_SESSION_LENGTH,
    max_item: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(item_seq [B, width], item_seq_len [B]): lengths drawn in 1..max_length (default: width)
    unless given; items in 1..max_item (default: the catalog; small values make repeats common)."""
    generator = torch.Generator().manual_seed(seed)
    if lengths is None:
        seq_len = torch.randint(1, (max_length or width) + 1, (batch_size,), generator=generator)
    else:
        seq_len = torch.tensor(lengths)
    seq = torch.randint(1, (max_item or catalog_size) + 1, (batch_size, width), generator=generator)
    seq[torch.arange(width)[None, :] >= seq_len[:, None]] = 0
    return seq, seq_len


def pad_sessions(sessions: list[list[int]], length: int = MAX_SESSION_LENGTH) -> tuple[Tensor, Tensor]:
    """Given sessions right-padded with 0 to `length`, with their lengths."""
    seq = torch.zeros(len(sessions), length, dtype=torch.int64)
    for row, session in enumerate(sessions):
        seq[row, : len(session)] = torch.tensor(session)
    return seq, torch.tensor([len(session) for session in sessions])


def random_sessions(count: int, seed: int, item_range: int) -> list[list[int]]:
    """Random lengths 1..L; a small item_range gives many repeats and loops."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, MAX_SESSION_LENGTH + 1, (count,), generator=generator).tolist()
    return [torch.randint(1, item_range + 1, (n,), generator=generator).tolist() for n in lengths]
