"""The uniform interface of session encoders and the embedding-size policies.

An encoder maps a batch of right-padded sessions to one vector per session; scoring against the
catalog is separate (services/inference/scoring.py) and reads the table the encoder exposes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from etude.defaults import MAX_SESSION_LENGTH

from ..options import fourth_root_dim, resolve_embedding_dim

__all__ = [
    "MAX_SESSION_LENGTH",
    "SessionEncoder",
    "bert_style_init",
    "fourth_root_dim",
    "resolve_embedding_dim",
    "zero_padding_row",
]


class SessionEncoder(nn.Module):
    """A session-based model without its scoring head.

    forward(item_seq [B, L] int64, right-padded with 0, real items at 0..len-1;
    item_seq_len [B] int64 in 1..L) -> session representation [B, d].
    Subclasses must stay scriptable: no NumPy, `.item()` or branches on tensor values.
    """

    def __init__(self, catalog_size: int, embedding_dim: int) -> None:
        super().__init__()
        if catalog_size < 1:
            raise ValueError(f"catalog_size must be >= 1, got {catalog_size}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.catalog_size = catalog_size
        self.embedding_dim = embedding_dim

    def item_embeddings(self) -> Tensor:
        """The [catalog_size + 1, d] table that scoring multiplies with; row 0 is padding."""
        raise NotImplementedError(f"{type(self).__name__} must expose its item embeddings")

    def details(self) -> dict[str, str]:
        """Model-specific choices worth reporting (hidden sizes, heads, ...)."""
        return {}


def zero_padding_row(embedding: nn.Embedding) -> None:
    """Zeroes row 0 (padding) after initialisation, as every model in this suite does."""
    with torch.no_grad():
        embedding.weight[0].zero_()


# RecBole's initialiser_range for its transformer-based models (SASRec, LightSANs, GC-SAN).
BERT_INIT_STD = 0.02


def bert_style_init(module: nn.Module) -> None:
    """RecBole's transformer initialisation, for `model.apply`: N(0, 0.02) weights of linear and
    embedding layers, zero biases, LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=BERT_INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
