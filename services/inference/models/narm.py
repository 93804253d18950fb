"""NARM (shared/models.md, model 2): a GRU over the session, an attention over its states
against the last state (local encoder) and the last state itself (global encoder)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ItemInit, SessionEncoder, item_embedding_table


class NARM(SessionEncoder):
    """E [C+1, d]; GRU d -> hidden (no bias); A1, A2 hidden x hidden, v hidden -> 1, B 2 hidden -> d
    (no biases). alpha_i = v^T (m_i * sigmoid(A1 O_i + A2 h_t)), s = B [sum_i alpha_i O_i ; h_t].
    """

    def __init__(self, catalog_size: int, embedding_dim: int, hidden_size: int = 128) -> None:
        super().__init__(catalog_size, embedding_dim)
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        self.hidden_size = hidden_size
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.gru = nn.GRU(embedding_dim, hidden_size, num_layers=1, bias=False, batch_first=True)
        self.a_1 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.a_2 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_t = nn.Linear(hidden_size, 1, bias=False)
        self.b = nn.Linear(2 * hidden_size, embedding_dim, bias=False)
        # RecBole's initialisation: xavier_normal_ for the embedding and the linear layers; the
        # GRU keeps torch's default (RecBole's NARM does not touch it). Then row 0 zeroed.
        for linear in (self.a_1, self.a_2, self.v_t, self.b):
            nn.init.xavier_normal_(linear.weight)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        states, _ = self.gru(embedded)  # [B, L, H]
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        last = states[rows, item_seq_len - 1]  # h_t: right padding is never seen before len-1
        mask = (item_seq > 0).unsqueeze(2).to(states.dtype)
        # No softmax: v has no bias, so the masked (pad) positions weigh exactly 0.
        alpha = self.v_t(mask * torch.sigmoid(self.a_1(states) + self.a_2(last).unsqueeze(1)))  # [B, L, 1]
        local = (alpha * states).sum(dim=1)
        return self.b(torch.cat([local, last], dim=1))

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's xavier_normal_, row 0 zeroed.
        return ItemInit.xavier_normal(self.catalog_size + 1, self.embedding_dim)

    def details(self) -> dict[str, str]:
        return {"hidden_size": str(self.hidden_size), "gru_layers": "1", "gru_bias": "false"}


def build_narm(catalog_size: int, embedding_dim: int, hidden_size: int = 128) -> NARM:
    return NARM(catalog_size, embedding_dim, hidden_size=hidden_size)
