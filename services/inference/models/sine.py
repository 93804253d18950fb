"""SINE (shared/models.md, model 10): the session activates its top-K of a set of prototype
interests; one embedding per interest, aggregated into one vector against a predicted intention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ItemInit, SessionEncoder, item_embedding_table

# RecBole's SINE draws its matrices from normal(0, 0.01).
INITIALIZER_RANGE = 0.01


class SINE(SessionEncoder):
    """x = E[seq] (no padding mask in any softmax over L, as in the reference):
    1. a = softmax_L(tanh(x W1) w2), z = sum_t a_t x_t;
    2. top-K prototypes of z C_p^T, C_u = C_p[idx] * sigmoid(score);
    3. P_kt = softmax_K(normalize(x W3) LN2(C_u)^T);  4. P_tk[k] = softmax_L(tanh(x W_k1[k]) w_k2[k]);
    5. phi = normalize((P_kt^T * P_tk) x);  6. x_bar = P_kt C_u, w = softmax_L(tanh(x_bar W3) w4),
       c_hat = LN4(sum_t w_t x_bar_t);  7. e = softmax_K(phi c_hat / tau), s = sum_k e_k phi_k.
    """

    def __init__(
        self,
        catalog_size: int,
        embedding_dim: int,
        num_prototypes: int = 50,
        num_interests: int = 3,
        tau: float = 0.1,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__(catalog_size, embedding_dim)
        if not 1 <= num_interests <= num_prototypes:
            raise ValueError(
                f"num_interests must be in 1..num_prototypes = {num_prototypes}, got {num_interests}"
            )
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.num_prototypes = num_prototypes
        self.num_interests = num_interests
        self.tau = tau
        dim = embedding_dim
        self.item_embedding = item_embedding_table(catalog_size, dim)
        self.prototypes = nn.Embedding(num_prototypes, dim)
        self.w1 = nn.Parameter(torch.empty(dim, dim))
        self.w2 = nn.Parameter(torch.empty(dim))
        self.w3 = nn.Parameter(torch.empty(dim, dim))
        self.w4 = nn.Parameter(torch.empty(dim))
        self.w_k_1 = nn.Parameter(torch.empty(num_interests, dim, dim))
        self.w_k_2 = nn.Parameter(torch.empty(num_interests, dim))
        self.ln2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.ln4 = nn.LayerNorm(dim, eps=layer_norm_eps)
        # RecBole's initialisation: matrices normal(0, 0.01), embeddings Xavier normal; row 0 zeroed.
        for matrix in (self.w1, self.w2, self.w3, self.w4, self.w_k_1, self.w_k_2):
            nn.init.normal_(matrix, mean=0.0, std=INITIALIZER_RANGE)
        nn.init.xavier_normal_(self.prototypes.weight)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encode(self.item_embedding(item_seq), item_seq, item_seq_len)

    def encode(self, embedded: Tensor, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        x = embedded  # [B, L, d]
        batch_size, length, dim = x.shape
        # 1-2. Concept activation: one topk (the reference sorts twice).
        activation = torch.softmax(torch.tanh(x @ self.w1) @ self.w2, dim=1)  # [B, L]
        summary = torch.bmm(activation.unsqueeze(1), x).squeeze(1)  # [B, d]
        prototype_scores, prototype_ids = torch.topk(
            summary @ self.prototypes.weight.T, self.num_interests, dim=1
        )
        interests = self.prototypes(prototype_ids) * torch.sigmoid(prototype_scores).unsqueeze(2)  # [B, K, d]
        # 3. Intention assignment: each position over the K interests.
        position_interest = torch.softmax(
            torch.bmm(F.normalize(x @ self.w3, dim=2), self.ln2(interests).transpose(1, 2)), dim=2
        )  # [B, L, K]
        # 4. Attention per interest over the positions: the K projections as one [d, K*d] product.
        projection = self.w_k_1.permute(1, 0, 2).reshape(dim, self.num_interests * dim)
        keys = torch.tanh(x @ projection).view(batch_size, length, self.num_interests, dim)
        interest_position = torch.softmax((keys * self.w_k_2).sum(dim=3), dim=1).transpose(1, 2)  # [B, K, L]
        # 5. Interest embeddings.
        interest_embeddings = F.normalize(
            torch.bmm(position_interest.transpose(1, 2) * interest_position, x), dim=2
        )  # [B, K, d]
        # 6. The intention: the prototype sequence, attended.
        prototype_sequence = torch.bmm(position_interest, interests)  # [B, L, d]
        intention_weights = torch.softmax(torch.tanh(prototype_sequence @ self.w3) @ self.w4, dim=1)  # [B, L]
        intention = self.ln4(torch.bmm(intention_weights.unsqueeze(1), prototype_sequence).squeeze(1))
        # 7. Aggregation.
        aggregation = torch.softmax(
            torch.bmm(interest_embeddings, intention.unsqueeze(2)).squeeze(2) / self.tau, dim=1
        )  # [B, K]
        return torch.bmm(aggregation.unsqueeze(1), interest_embeddings).squeeze(1)

    def item_embeddings(self) -> Tensor:
        return self.item_embedding.weight

    def item_init(self) -> ItemInit:
        # RecBole's xavier_normal_, row 0 zeroed.
        return ItemInit.xavier_normal(self.catalog_size + 1, self.embedding_dim)

    def details(self) -> dict[str, str]:
        return {
            "prototypes": str(self.num_prototypes),
            "interests": str(self.num_interests),
            "tau": str(self.tau),
            "padding_masked": "false",
        }


def build_sine(
    catalog_size: int,
    embedding_dim: int,
    num_prototypes: int = 50,
    num_interests: int = 3,
    tau: float = 0.1,
) -> SINE:
    return SINE(
        catalog_size,
        embedding_dim,
        num_prototypes=num_prototypes,
        num_interests=num_interests,
        tau=tau,
    )
