"""GC-SAN (shared/models.md, model 8): SR-GNN's session graph and gated step, then causal
self-attention over the positions' node states; s = w * last(T) + (1 - w) * last(S).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import BERT_INIT_STD, ItemInit, SessionEncoder, bert_style_init, item_embedding_table
from .session_graph import GatedGraphStep, gather_nodes, session_graph
from .transformer import TransformerEncoder, causal_padding_mask

# RecBole's initializer_range for the normal initialisation of embeddings and linear layers.


class GCSAN(SessionEncoder):
    """E [C+1, d]; gated graph steps (no message biases); S = H[alias];
    T = transformer(S, causal + padding mask) (no positions, no input LayerNorm);
    s = w * last(T) + (1 - w) * last(S).
    """

    def __init__(
        self,
        catalog_size: int,
        embedding_dim: int,
        num_layers: int = 1,
        num_heads: int = 1,
        inner_size: int = 256,
        weight: float = 0.6,
        num_steps: int = 1,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__(catalog_size, embedding_dim)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if num_layers < 1 or num_heads < 1:
            raise ValueError(f"num_layers and num_heads must be >= 1, got {num_layers} and {num_heads}")
        self.attention_weight = weight
        self.num_steps = num_steps
        self.inner_size = inner_size
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.gnn = GatedGraphStep(embedding_dim, message_bias=False)
        self.self_attention = TransformerEncoder(
            embedding_dim, num_layers, num_heads, inner_size=inner_size, layer_norm_eps=layer_norm_eps
        )
        # RecBole's initialisation: the graph cell's own parameters uniform in +-1/sqrt(d), then
        # every Embedding and Linear (the edge projections included) normal(0, 0.02) with zero
        # biases, LayerNorms at (1, 0); then row 0 zeroed.
        bound = 1.0 / math.sqrt(embedding_dim)
        for parameter in (self.gnn.w_ih, self.gnn.w_hh, self.gnn.b_ih, self.gnn.b_hh):
            nn.init.uniform_(parameter, -bound, bound)
        self.apply(bert_style_init)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        alias, adjacency_in, adjacency_out = session_graph(item_seq, item_seq_len)
        nodes = embedded
        for _ in range(self.num_steps):
            nodes = self.gnn(adjacency_in, adjacency_out, nodes)
        states = gather_nodes(nodes, alias)  # [B, L, d]
        attended = self.self_attention(states, causal_padding_mask(item_seq))
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        last_position = item_seq_len - 1
        w = self.attention_weight
        return w * attended[rows, last_position] + (1 - w) * states[rows, last_position]

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's N(0, 0.02) (bert_style_init runs last), row 0 zeroed.
        return ItemInit("normal", BERT_INIT_STD)

    def details(self) -> dict[str, str]:
        return {
            **self.self_attention.details(),
            "inner_size": str(self.inner_size),
            "weight": str(self.attention_weight),
            "gnn_steps": str(self.num_steps),
            "graph": "positions as nodes, dense adjacency",
        }


def build_gcsan(
    catalog_size: int,
    embedding_dim: int,
    num_layers: int = 1,
    num_heads: int = 1,
    inner_size: int = 256,
    weight: float = 0.6,
    num_steps: int = 1,
) -> GCSAN:
    return GCSAN(
        catalog_size,
        embedding_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        inner_size=inner_size,
        weight=weight,
        num_steps=num_steps,
    )
