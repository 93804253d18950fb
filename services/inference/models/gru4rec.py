"""GRU4Rec (shared/models.md, model 1): a one-layer GRU over the session, then a dense layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ItemInit, SessionEncoder, item_embedding_table


class GRU4Rec(SessionEncoder):
    """E [C+1, d]; GRU d -> hidden, no bias; dense hidden -> d with bias; s = dense(last(O))."""

    def __init__(self, catalog_size: int, embedding_dim: int, hidden_size: int = 128) -> None:
        super().__init__(catalog_size, embedding_dim)
        self.hidden_size = hidden_size
        self.item_embedding = item_embedding_table(catalog_size, embedding_dim)
        self.gru = nn.GRU(embedding_dim, hidden_size, num_layers=1, bias=False, batch_first=True)
        self.dense = nn.Linear(hidden_size, embedding_dim)
        # RecBole's initialisation, then the padding row zeroed.
        for weight in self.gru.parameters():  # weight_ih_l0 and weight_hh_l0: no biases
            nn.init.xavier_uniform_(weight)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        states, _ = self.gru(embedded)
        # With right padding the state at len-1 has not seen a pad: no packing needed.
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        return self.dense(states[rows, item_seq_len - 1])

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's xavier_normal_, row 0 zeroed.
        return ItemInit.xavier_normal(self.catalog_size + 1, self.embedding_dim)

    def details(self) -> dict[str, str]:
        return {"hidden_size": str(self.hidden_size), "gru_layers": "1", "gru_bias": "false"}


def build_gru4rec(catalog_size: int, embedding_dim: int, hidden_size: int = 128) -> GRU4Rec:
    return GRU4Rec(catalog_size, embedding_dim, hidden_size=hidden_size)
