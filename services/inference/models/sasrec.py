"""SASRec (shared/models.md, model 4): causal self-attention over items plus positions; the
session is the last real position's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    BERT_INIT_STD,
    MAX_SESSION_LENGTH,
    ItemInit,
    SessionEncoder,
    bert_style_init,
    item_embedding_table,
)
from .transformer import (
    TransformerEncoder,
    TransformerLayer,
    causal_padding_mask,
)

# RecBole's initializer_range.


class SASRec(SessionEncoder):
    """X0 = LN(E[seq] + P[0..L-1]) (no sqrt(d) scaling); X = transformer(X0, causal + padding
    mask); s = last(X).

    With `last_layer_query_only` the last layer computes its query, attention and feed-forward
    at position len-1 alone (keys and values still span the session): the same maths as the
    full layer followed by last(), since no later layer reads the other positions.
    """

    def __init__(
        self,
        catalog_size: int,
        embedding_dim: int,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        last_layer_query_only: bool = True,
        max_session_length: int = MAX_SESSION_LENGTH,
    ) -> None:
        super().__init__(catalog_size, embedding_dim)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.inner_size = inner_size
        self.last_layer_query_only = last_layer_query_only
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.position_embedding = nn.Embedding(max_session_length, embedding_dim)
        self.layer_norm = nn.LayerNorm(embedding_dim, eps=1e-12)
        # The shared blocks, split as "all but the last" and the last, which alone knows to
        # compute only what position len-1 needs.
        self.transformer = TransformerEncoder(embedding_dim, num_layers - 1, num_heads, inner_size, 1e-12)
        self.final_layer = TransformerLayer(embedding_dim, num_heads, inner_size, 1e-12)
        self.apply(bert_style_init)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        batch, length = item_seq.shape
        hidden = self.layer_norm(embedded + self.position_embedding.weight[:length])
        mask = causal_padding_mask(item_seq)
        hidden = self.transformer(hidden, mask)
        rows = torch.arange(batch, device=item_seq.device)
        last = item_seq_len - 1
        if not self.last_layer_query_only:
            return self.final_layer(hidden, mask)[rows, last]
        # The last block at position len-1 alone: its query attends to every key and value.
        attention = self.final_layer.attention
        heads = attention.num_heads
        head_size = attention.head_size
        query_input = hidden[rows, last]  # [B, d]
        query = attention.query(query_input).view(batch, heads, 1, head_size)
        key = attention.key(hidden).view(batch, length, heads, head_size).transpose(1, 2)
        value = attention.value(hidden).view(batch, length, heads, head_size).transpose(1, 2)
        query_mask = mask[rows, :, last].unsqueeze(2)  # row len-1 of the mask: [B, 1, 1, L]
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=query_mask)
        context = context.reshape(batch, heads * head_size)
        attended = attention.layer_norm(query_input + attention.dense(context))
        return self.final_layer.feed_forward(attended)

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's N(0, 0.02) (bert_style_init), row 0 zeroed.
        return ItemInit("normal", BERT_INIT_STD)

    def details(self) -> dict[str, str]:
        return {
            "layers": str(len(self.transformer.layers) + 1),
            "heads": str(self.final_layer.attention.num_heads),
            "head_size": str(self.final_layer.attention.head_size),
            "inner_size": str(self.inner_size),
            "positions": str(self.position_embedding.num_embeddings),
            "last_layer_query_only": str(self.last_layer_query_only).lower(),
        }


def build_sasrec(
    catalog_size: int,
    embedding_dim: int,
    num_layers: int = 2,
    num_heads: int = 2,
    inner_size: int = 256,
    last_layer_query_only: bool = True,
) -> SASRec:
    return SASRec(
        catalog_size,
        embedding_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        inner_size=inner_size,
        last_layer_query_only=last_layer_query_only,
    )
