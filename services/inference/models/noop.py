"""`noop`: a model that computes nothing, to measure the serving infrastructure alone."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import SessionEncoder


class NoopEncoder(SessionEncoder):
    """Returns a zero vector per session; its catalog is all zeros and holds no memory."""

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return torch.zeros(item_seq.size(0), self.embedding_dim, dtype=torch.float32, device=item_seq.device)

    def item_embeddings(self) -> Tensor:
        # A broadcast view: every score is 0 and a 10M-item catalog costs no memory.
        return torch.zeros(1, self.embedding_dim).expand(self.catalog_size + 1, -1)


def build_noop(catalog_size: int, embedding_dim: int) -> NoopEncoder:
    return NoopEncoder(catalog_size, embedding_dim)
