"""The session graph of SR-GNN and GC-SAN (shared/models.md, models 7 and 8), built batched on
the input's device, and the gated graph step that runs over it.

The reference builds each session's graph on the host with NumPy, nodes being the distinct
items. Here the nodes are the positions: a position's node is the first position holding the
same item (its alias), so every distinct item has exactly one node and the later occurrences
are isolated nodes that are never read. This gives the same representations with no sort,
unique or host round trip, and a dense [B, L, L] adjacency (L = 50: cheaper than sparse).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def session_graph(item_seq: Tensor, item_seq_len: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (alias [B, L] int64, adjacency_in [B, L, L], adjacency_out [B, L, L]).

    alias[b, i] is the first position holding item_seq[b, i]. An edge runs from the node of
    position i to the node of position i + 1 for i < len - 1, counted once however often it
    repeats (binary). adjacency_out[u, v] = e(u, v) / outdeg(u) and
    adjacency_in[v, u] = e(u, v) / indeg(v), with divisor 1 for degree 0.
    """
    batch_size, length = item_seq.shape
    positions = torch.arange(length, device=item_seq.device)
    same_item = item_seq.unsqueeze(2) == item_seq.unsqueeze(1)  # [B, L, L]
    # The first occurrence, reduced in int32: CPU min-reductions over int64 are several times slower.
    first = torch.where(same_item, positions.to(torch.int32), length).amin(dim=-1)
    alias = first.to(torch.int64)
    source = alias[:, :-1]
    target = alias[:, 1:]
    valid = (positions[:-1].unsqueeze(0) < (item_seq_len - 1).unsqueeze(1)).to(torch.float32)
    counts = torch.zeros(batch_size, length * length, dtype=torch.float32, device=item_seq.device)
    counts.scatter_add_(1, source * length + target, valid)
    adjacency = (counts > 0).to(torch.float32).view(batch_size, length, length)
    adjacency_out = adjacency / adjacency.sum(dim=2, keepdim=True).clamp(min=1.0)
    incoming = adjacency.transpose(1, 2)
    adjacency_in = incoming / incoming.sum(dim=2, keepdim=True).clamp(min=1.0)
    return alias, adjacency_in, adjacency_out


def gather_nodes(nodes: Tensor, alias: Tensor) -> Tensor:
    """The node state of every position: nodes [B, L, d] at alias [B, L] -> [B, L, d]."""
    return torch.gather(nodes, 1, alias.unsqueeze(2).expand(-1, -1, nodes.size(2)))


class GatedGraphStep(nn.Module):
    """One gated graph step (a GRU cell whose input is the in and out messages).

    M_in = A_in (W_in H + b) [+ b_iah], M_out = A_out (W_out H + b) [+ b_ioh];
    g_i = W_ih [M_in ; M_out] + b_ih, g_h = W_hh H + b_hh, each split in (r, z, n);
    H' = (1 - z) * H + z * tanh(g_i^n + r * g_h^n). SR-GNN has the message biases, GC-SAN not.
    Parameters are left uninitialised: the model initialises them the way its reference does.
    """

    def __init__(self, hidden_size: int, message_bias: bool) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.w_ih = nn.Parameter(torch.empty(3 * hidden_size, 2 * hidden_size))
        self.w_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.b_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.b_hh = nn.Parameter(torch.empty(3 * hidden_size))
        self.b_iah: nn.Parameter | None
        self.b_ioh: nn.Parameter | None
        if message_bias:
            self.b_iah = nn.Parameter(torch.empty(hidden_size))
            self.b_ioh = nn.Parameter(torch.empty(hidden_size))
        else:
            self.register_parameter("b_iah", None)
            self.register_parameter("b_ioh", None)
        self.linear_edge_in = nn.Linear(hidden_size, hidden_size)
        self.linear_edge_out = nn.Linear(hidden_size, hidden_size)

    def forward(self, adjacency_in: Tensor, adjacency_out: Tensor, hidden: Tensor) -> Tensor:
        # The graph is built in float32; a model cast to another precision steps in its own.
        message_in = torch.bmm(adjacency_in.to(hidden.dtype), self.linear_edge_in(hidden))
        message_out = torch.bmm(adjacency_out.to(hidden.dtype), self.linear_edge_out(hidden))
        bias_in = self.b_iah
        if bias_in is not None:
            message_in = message_in + bias_in
        bias_out = self.b_ioh
        if bias_out is not None:
            message_out = message_out + bias_out
        gates_input = F.linear(torch.cat([message_in, message_out], dim=2), self.w_ih, self.b_ih)
        gates_hidden = F.linear(hidden, self.w_hh, self.b_hh)
        input_reset, input_update, input_new = gates_input.chunk(3, dim=2)
        hidden_reset, hidden_update, hidden_new = gates_hidden.chunk(3, dim=2)
        reset = torch.sigmoid(input_reset + hidden_reset)
        update = torch.sigmoid(input_update + hidden_update)
        new = torch.tanh(input_new + reset * hidden_new)
        return (1 - update) * hidden + update * new
