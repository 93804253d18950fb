"""Runtimes an encoder is served under: eager, TorchScript (scripted, frozen) or torch.compile."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .options import RUNTIMES

EncoderFn = Callable[[Tensor, Tensor], Tensor]


def prepare_encoder(encoder: nn.Module, runtime: str) -> EncoderFn:
    """Returns `encoder` ready to serve under `runtime`, in eval mode.

    jit scripts (never traces: a trace freezes the example's control flow and shapes), then
    freezes and applies optimize_for_inference. compile uses dynamic shapes so that batch sizes
    never seen before do not recompile. Both must be warmed up before serving.
    """
    encoder = encoder.eval()
    if runtime == "eager":
        return encoder
    if runtime == "jit":
        # TorchScript is deprecated in torch 2.x but is what the study measures: keep it quiet.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.script(encoder)
            return torch.jit.optimize_for_inference(torch.jit.freeze(scripted))
    if runtime == "compile":
        compiled: EncoderFn = torch.compile(encoder, dynamic=True)  # type: ignore[assignment]
        return compiled
    raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
