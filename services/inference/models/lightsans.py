"""LightSANs (shared/models.md, model 6): self-attention against k latent interests (low-rank
item-to-interest aggregation) plus a decoupled position attention; no masks, as the reference.

The position attention Pi depends only on parameters, so it is computed at load by `refresh()`
(the builder calls it, and so does every `load_state_dict`) and kept as a non-persistent buffer:
`torch.jit.freeze` folds it into the program as a constant. Whoever changes the position
weights in place must call `refresh()` again.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .base import (
    BERT_INIT_STD,
    MAX_SESSION_LENGTH,
    ItemInit,
    SessionEncoder,
    bert_style_init,
    item_embedding_table,
)
from .transformer import FeedForward

# RecBole's initializer_range; the reference's position query is scaled by (2 dh)^-1/2 as well.
POSITION_SCALE_FACTOR = 2
# ETUDE's value; RecBole's default is 5.
DEFAULT_K_INTERESTS = 15


class LightAttention(nn.Module):
    """X' = LN(X + (A V~ + Pi V) W_o + b), with K~, V~ [B, k, h*dh] the interest aggregates of
    K and V, A = softmax over the L axis of Q K~^T / sqrt(dh), Pi the precomputed position term.
    """

    if TYPE_CHECKING:  # buffers, typed for mypy; TorchScript cannot read these annotations
        position_logits: Tensor
        position_attention: Tensor

    def __init__(self, hidden_size: int, num_heads: int, k_interests: int, max_session_length: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        # Odd widths with several heads: ceil(d / heads) per head, projected back to d.
        self.head_size = math.ceil(hidden_size / num_heads)
        self.max_session_length = max_session_length
        inner = num_heads * self.head_size
        self.query = nn.Linear(hidden_size, inner)
        self.key = nn.Linear(hidden_size, inner)
        self.value = nn.Linear(hidden_size, inner)
        # RecBole draws the interest projections from N(0, 1) and its init leaves them alone.
        self.key_interests = nn.Parameter(torch.randn(inner, k_interests))
        self.value_interests = nn.Parameter(torch.randn(inner, k_interests))
        self.position_query = nn.Linear(hidden_size, inner)
        self.position_key = nn.Linear(hidden_size, inner)
        self.position_layer_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dense = nn.Linear(inner, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        # [1, h, L_max, L_max]: the logits (for sessions shorter than L_max) and their softmax.
        shape = (1, num_heads, max_session_length, max_session_length)
        self.register_buffer("position_logits", torch.zeros(shape), persistent=False)
        self.register_buffer("position_attention", torch.zeros(shape), persistent=False)

    @torch.no_grad()
    def refresh(self, positions: Tensor) -> None:
        """Recomputes Pi from the position table P [L_max, d] and this layer's weights."""
        length = self.max_session_length
        normalised = self.position_layer_norm(positions[:length])
        query = self.position_query(normalised).view(length, self.num_heads, self.head_size).transpose(0, 1)
        key = self.position_key(normalised).view(length, self.num_heads, self.head_size).transpose(0, 1)
        query = query * float(self.head_size * POSITION_SCALE_FACTOR) ** -0.5
        logits = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
        self.position_logits.copy_(logits.unsqueeze(0))
        # Softmax over dim -2 (the query axis), as the reference does.
        self.position_attention.copy_(torch.softmax(self.position_logits, dim=-2))

    def forward(self, hidden: Tensor) -> Tensor:
        batch, length, _ = hidden.shape
        heads, head_size = self.num_heads, self.head_size
        query = self.query(hidden).view(batch, length, heads, head_size).transpose(1, 2)
        key = self.key(hidden)
        value = self.value(hidden)
        # Item-to-interest aggregation: softmax over L of X Theta, then [B, k, h*dh].
        key_weights = torch.softmax(torch.matmul(key, self.key_interests), dim=1)
        value_weights = torch.softmax(torch.matmul(value, self.value_interests), dim=1)
        interests = key_weights.size(2)
        key_interests = torch.bmm(key_weights.transpose(1, 2), key)
        value_interests = torch.bmm(value_weights.transpose(1, 2), value)
        key_interests = key_interests.view(batch, interests, heads, head_size).transpose(1, 2)
        value_interests = value_interests.view(batch, interests, heads, head_size).transpose(1, 2)
        # A = softmax over the L axis of Q K~^T / sqrt(dh), as the reference does. Computed as
        # softmax over the last axis of K~ Q^T [B, h, k, L], then transposed: the same numbers,
        # and torch.compile (inductor, torch 2.13 CPU) miscompiles the dim -2 form (errors ~1e-2).
        scores = torch.matmul(key_interests, query.transpose(-1, -2)) / math.sqrt(head_size)
        item_context = torch.matmul(torch.softmax(scores, dim=-1).transpose(-1, -2), value_interests)
        if length == self.max_session_length:
            position_attention = self.position_attention
        else:
            # Pi for a shorter L is the softmax of the logits' [:L, :L] corner, not a slice of Pi.
            corner = self.position_logits[:, :, :length, :length]
            position_attention = torch.softmax(corner, dim=-2)
        value_heads = value.view(batch, length, heads, head_size).transpose(1, 2)
        position_context = torch.matmul(position_attention, value_heads)
        context = (item_context + position_context).transpose(1, 2).reshape(batch, length, heads * head_size)
        return self.layer_norm(hidden + self.dense(context))


class LightLayer(nn.Module):
    def __init__(
        self, hidden_size: int, num_heads: int, k_interests: int, inner_size: int, max_session_length: int
    ) -> None:
        super().__init__()
        self.attention = LightAttention(hidden_size, num_heads, k_interests, max_session_length)
        self.feed_forward = FeedForward(hidden_size, inner_size, 1e-12)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.feed_forward(self.attention(hidden))


class LightSANs(SessionEncoder):
    """X = LN(E[seq]) (positions enter only through Pi); `num_layers` light layers without
    masks (padding is attended, as in the reference); s = last(X).
    """

    def __init__(
        self,
        catalog_size: int,
        embedding_dim: int,
        num_layers: int = 2,
        num_heads: int = 2,
        k_interests: int = DEFAULT_K_INTERESTS,
        inner_size: int = 256,
        max_session_length: int = MAX_SESSION_LENGTH,
    ) -> None:
        super().__init__(catalog_size, embedding_dim)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if k_interests < 1:
            raise ValueError(f"k_interests must be >= 1, got {k_interests}")
        self.num_heads = num_heads
        self.k_interests = k_interests
        self.inner_size = inner_size
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.position_embedding = nn.Embedding(max_session_length, embedding_dim)
        self.layer_norm = nn.LayerNorm(embedding_dim, eps=1e-12)
        self.layers = nn.ModuleList(
            [
                LightLayer(embedding_dim, num_heads, k_interests, inner_size, max_session_length)
                for _ in range(num_layers)
            ]
        )
        self.apply(bert_style_init)
        self.refresh()
        # Loaded weights (a checkpoint) recompute Pi too.
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def refresh(self) -> None:
        """Recomputes every layer's position attention Pi from the current weights."""
        for layer in self.layers:
            assert isinstance(layer, LightLayer)
            layer.attention.refresh(self.position_embedding.weight)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        hidden = self.layer_norm(embedded)
        for layer in self.layers:
            hidden = layer(hidden)
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        return hidden[rows, item_seq_len - 1]

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's N(0, 0.02) (bert_style_init), row 0 zeroed.
        return ItemInit("normal", BERT_INIT_STD)

    def details(self) -> dict[str, str]:
        head_size = math.ceil(self.embedding_dim / self.num_heads)
        return {
            "layers": str(len(self.layers)),
            "heads": str(self.num_heads),
            "head_size": str(head_size),
            "inner_size": str(self.inner_size),
            "k_interests": str(self.k_interests),
            "k_interests_note": f"ETUDE used {DEFAULT_K_INTERESTS} (RecBole's default is 5)",
            "positions": str(self.position_embedding.num_embeddings),
            "position_attention": "precomputed at load",
            "masks": "none (padding attended, as in the reference)",
        }


def _refresh_after_load(module: nn.Module, incompatible_keys: object) -> None:
    assert isinstance(module, LightSANs)
    module.refresh()


def build_lightsans(
    catalog_size: int,
    embedding_dim: int,
    num_layers: int = 2,
    num_heads: int = 2,
    k_interests: int = DEFAULT_K_INTERESTS,
    inner_size: int = 256,
) -> LightSANs:
    return LightSANs(
        catalog_size,
        embedding_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        k_interests=k_interests,
        inner_size=inner_size,
    )
