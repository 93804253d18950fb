"""STAMP (shared/models.md, model 3): attention over the session's item embeddings against the
last click and the session mean, then two tanh MLPs multiplied together."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ItemInit, SessionEncoder, item_embedding_table


class STAMP(SessionEncoder):
    """E [C+1, d]; W1, W2, W3 d x d and w0 d -> 1 (no bias); b_a [d]; MLP_a, MLP_b d x d with bias.

    alpha_i = w0^T sigmoid(W1 x_i + W2 x_t + W3 m_s + b_a), m_a = sum_i alpha_i x_i + m_s,
    s = tanh(MLP_a m_a) * tanh(MLP_b x_t).
    """

    def __init__(self, catalog_size: int, embedding_dim: int) -> None:
        super().__init__(catalog_size, embedding_dim)
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.w1 = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.w2 = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.w3 = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.w0 = nn.Linear(embedding_dim, 1, bias=False)
        self.b_a = nn.Parameter(torch.zeros(embedding_dim))
        self.mlp_a = nn.Linear(embedding_dim, embedding_dim)
        self.mlp_b = nn.Linear(embedding_dim, embedding_dim)
        # RecBole's initialisation: N(0, 0.002) embeddings, N(0, 0.05) linear weights, zero
        # biases; then row 0 zeroed.
        for linear in (self.w1, self.w2, self.w3, self.w0, self.mlp_a, self.mlp_b):
            nn.init.normal_(linear.weight, 0.0, 0.05)
        for linear in (self.mlp_a, self.mlp_b):
            nn.init.zeros_(linear.bias)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        items = embedded  # [B, L, d]
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        last = items[rows, item_seq_len - 1]  # x_t
        # The mean over the session: pads add E[0] = 0 to the sum.
        mean = items.sum(dim=1) / item_seq_len.unsqueeze(1).to(items.dtype)  # m_s
        # W2 x_t + W3 m_s + b_a once per session, broadcast over the positions.
        query = self.w2(last) + self.w3(mean) + self.b_a
        # No softmax and no mask, as in the reference: pads contribute alpha_i * E[0] = 0.
        alpha = self.w0(torch.sigmoid(self.w1(items) + query.unsqueeze(1)))  # [B, L, 1]
        attended = (alpha * items).sum(dim=1) + mean  # m_a
        return torch.tanh(self.mlp_a(attended)) * torch.tanh(self.mlp_b(last))

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's N(0, 0.002), row 0 zeroed.
        return ItemInit("normal", 0.002)

    def details(self) -> dict[str, str]:
        return {"attention": "no softmax, no mask (reference)"}


def build_stamp(catalog_size: int, embedding_dim: int) -> STAMP:
    return STAMP(catalog_size, embedding_dim)
