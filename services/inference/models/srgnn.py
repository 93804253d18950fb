"""SR-GNN (shared/models.md, model 7): gated graph steps over the session graph, then an
attention readout against the last click.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import ItemInit, SessionEncoder, item_embedding_table
from .session_graph import GatedGraphStep, gather_nodes, session_graph


class SRGNN(SessionEncoder):
    """E [C+1, d]; `num_steps` gated graph steps; S = H[alias], h_t = last(S);
    alpha_i = q^T sigmoid(W1 h_t + W2 S_i) (no softmax); a = sum_{i < len} alpha_i S_i;
    s = W3 [a ; h_t].
    """

    def __init__(self, catalog_size: int, embedding_dim: int, num_steps: int = 1) -> None:
        super().__init__(catalog_size, embedding_dim)
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.gnn = GatedGraphStep(embedding_dim, message_bias=True)
        self.linear_one = nn.Linear(embedding_dim, embedding_dim)
        self.linear_two = nn.Linear(embedding_dim, embedding_dim)
        self.linear_three = nn.Linear(embedding_dim, 1, bias=False)
        self.linear_transform = nn.Linear(2 * embedding_dim, embedding_dim)
        # RecBole's initialisation: every parameter uniform in +-1/sqrt(d); then row 0 zeroed.
        bound = 1.0 / math.sqrt(embedding_dim)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        alias, adjacency_in, adjacency_out = session_graph(item_seq, item_seq_len)
        nodes = embedded
        for _ in range(self.num_steps):
            nodes = self.gnn(adjacency_in, adjacency_out, nodes)
        states = gather_nodes(nodes, alias)  # [B, L, d]
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        last = states[rows, item_seq_len - 1]  # [B, d]
        alpha = self.linear_three(torch.sigmoid(self.linear_one(last).unsqueeze(1) + self.linear_two(states)))
        # Positions < len are exactly the non-zero ones for valid input; by length the readout
        # also ignores whatever follows the session.
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        in_session = (positions.unsqueeze(0) < item_seq_len.unsqueeze(1)).unsqueeze(2)
        attended = (alpha * states).masked_fill(~in_session, 0.0).sum(dim=1)
        return self.linear_transform(torch.cat([attended, last], dim=1))

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's uniform(+-1/sqrt(d)), row 0 zeroed.
        return ItemInit("uniform", 1.0 / math.sqrt(self.embedding_dim))

    def details(self) -> dict[str, str]:
        return {"gnn_steps": str(self.num_steps), "graph": "positions as nodes, dense adjacency"}


def build_srgnn(catalog_size: int, embedding_dim: int, num_steps: int = 1) -> SRGNN:
    return SRGNN(catalog_size, embedding_dim, num_steps=num_steps)
