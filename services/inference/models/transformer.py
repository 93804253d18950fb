"""The BERT-style post-LayerNorm transformer block shared by SASRec, CORE and GC-SAN
(shared/models.md, "Transformer block"), scriptable, and the causal + padding mask.

Odd widths with several heads (d = 57 or 67 with 2 heads) are served the way models.md says:
each head gets ceil(d / heads) dimensions, Q/K/V project d -> heads * head_size and the output
projects back to d.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def causal_padding_mask(item_seq: Tensor) -> Tensor:
    """Additive mask [B, 1, L, L]: 0 where key j <= query i and seq[j] != 0, else -10000.

    RecBole's value, not -inf (a fully masked row would be NaN; none is here), written as a
    literal because TorchScript cannot read a global float.
    """
    length = item_seq.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()
    allowed = causal.unsqueeze(0) & (item_seq != 0).unsqueeze(1)  # [B, L, L]
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=item_seq.device)
    return mask.masked_fill(~allowed, -10000.0).unsqueeze(1)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_size = math.ceil(hidden_size / num_heads)
        inner = num_heads * self.head_size
        self.query = nn.Linear(hidden_size, inner)
        self.key = nn.Linear(hidden_size, inner)
        self.value = nn.Linear(hidden_size, inner)
        self.dense = nn.Linear(inner, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        batch, length, _ = hidden.shape
        shape = (batch, length, self.num_heads, self.head_size)
        query = self.query(hidden).view(shape).transpose(1, 2)
        key = self.key(hidden).view(shape).transpose(1, 2)
        value = self.value(hidden).view(shape).transpose(1, 2)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size)
        return self.layer_norm(hidden + self.dense(context))


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, inner_size: int = 256, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.layer_norm(hidden + self.dense_2(F.gelu(self.dense_1(hidden))))


class TransformerLayer(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, inner_size: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(hidden_size, num_heads, layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, inner_size, layer_norm_eps)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        return self.feed_forward(self.attention(hidden, attention_mask))


class TransformerEncoder(nn.Module):
    """`num_layers` post-LN blocks: X' = LN(X + MHA(X)), Y = LN(X' + W2 gelu(W1 X' + b1) + b2)."""

    def __init__(
        self,
        hidden_size: int,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int = 256,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_size = math.ceil(hidden_size / num_heads)
        self.layers = nn.ModuleList(
            [TransformerLayer(hidden_size, num_heads, inner_size, layer_norm_eps) for _ in range(num_layers)]
        )

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """hidden [B, L, d], attention_mask additive [B, 1, L, L] -> [B, L, d]."""
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        return hidden

    def details(self) -> dict[str, str]:
        return {
            "layers": str(len(self.layers)),
            "heads": str(self.num_heads),
            "head_size": str(self.head_size),
        }
