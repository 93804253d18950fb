"""The uniform interface of session encoders and the embedding-size policies.

An encoder maps a batch of right-padded sessions to one vector per session; scoring against the
catalog is separate (services/inference/scoring.py) and reads the table the encoder exposes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from etude.defaults import MAX_SESSION_LENGTH

from ..options import fourth_root_dim, resolve_embedding_dim
from .item_rows import ItemInit, item_table

__all__ = [
    "MAX_SESSION_LENGTH",
    "ItemInit",
    "SessionEncoder",
    "bert_style_init",
    "fourth_root_dim",
    "item_embedding_table",
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

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """forward with the session's item rows given ([B, L, d], zeros at the pads): what a
        router runs after looking the rows up from the catalog shards that hold them."""
        raise NotImplementedError(f"{type(self).__name__} cannot encode looked-up item rows")

    def item_init(self) -> ItemInit:
        """The distribution of the item rows (services/inference/models/item_rows.py)."""
        raise NotImplementedError(f"{type(self).__name__} declares no item table initialisation")

    def materialise_item_table(self, seed: int) -> None:
        """Fills the item table (built on the meta device) with the rows `seed` decides."""
        table: nn.Embedding = self.item_embedding  # type: ignore[assignment]
        rows = item_table(self.item_init(), seed, self.catalog_size, self.embedding_dim)
        table.weight = nn.Parameter(rows)

    def has_item_table(self) -> bool:
        """False for an encoder built without its rows (a router's: they live in the shards)."""
        return not self.item_embeddings().is_meta

    def details(self) -> dict[str, str]:
        """Model-specific choices worth reporting (hidden sizes, heads, ...)."""
        return {}


def item_embedding_table(catalog_size: int, embedding_dim: int) -> nn.Embedding:
    """The [catalog_size + 1, d] item table, on the meta device: no memory and no draws from the
    global random stream until build_model fills it with `materialise_item_table` (whose rows do
    not depend on how the catalog is sharded)."""
    return nn.Embedding(catalog_size + 1, embedding_dim, device="meta")


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
