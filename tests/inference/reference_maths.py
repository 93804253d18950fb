"""Per-position reference maths in float64, shared by the model tests: the straightforward
computations the batched models are checked against (shared/models.md, "Transformer block")."""

from __future__ import annotations

import math

import torch
from etude.services.inference.models.transformer import TransformerLayer
from torch import Tensor, nn


def layer_norm(x: Tensor, module: nn.LayerNorm) -> Tensor:
    mean = x.mean()
    variance = ((x - mean) ** 2).mean()
    return (x - mean) / torch.sqrt(variance + module.eps) * module.weight.double() + module.bias.double()


def linear(x: Tensor, module: nn.Linear) -> Tensor:
    return module.weight.double() @ x + module.bias.double()


def reference_layer(
    layer: TransformerLayer, inputs: list[Tensor], num_heads: int, head_size: int
) -> list[Tensor]:
    """One post-LN block, position by position; position i attends to positions 0..i."""
    attention = layer.attention
    keys = [linear(x, attention.key) for x in inputs]
    values = [linear(x, attention.value) for x in inputs]
    outputs = []
    for i, x in enumerate(inputs):
        query = linear(x, attention.query)
        context = []
        for head in range(num_heads):
            part = slice(head * head_size, (head + 1) * head_size)
            logits = torch.stack([query[part] @ keys[j][part] for j in range(i + 1)]) / math.sqrt(head_size)
            weights = torch.softmax(logits, dim=0)
            context.append(weights @ torch.stack([values[j][part] for j in range(i + 1)]))
        attended = layer_norm(x + linear(torch.cat(context), attention.dense), attention.layer_norm)
        feed = layer.feed_forward
        inner = linear(attended, feed.dense_1)
        gelu = inner * 0.5 * (1.0 + torch.erf(inner / math.sqrt(2.0)))
        outputs.append(layer_norm(attended + linear(gelu, feed.dense_2), feed.layer_norm))
    return outputs


def sharpen(model: nn.Module, seed: int) -> None:
    """Spreads every weight as N(0, 0.5), much wider than RecBole's initialisations, so that
    attention and softmaxes are far from uniform and a wrong mask or head split shows in a
    comparison; keeps the padding row at 0. Derived buffers (LightSANs' position attention) are
    not recomputed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        model.item_embedding.weight[0].zero_()  # type: ignore[union-attr, operator, index]
