"""Accuracy mode (as MLPerf Inference has one): recall@k of a reduced-precision scorer's answers
against fp32 exact scoring of the same weights, over sessions from the workload generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..workload.generator import SessionBatch, SessionGenerator, SyntheticWorkload
from .models.base import MAX_SESSION_LENGTH
from .options import DEFAULT_ACCURACY_ALPHA_CLICKS, DEFAULT_ACCURACY_ALPHA_LENGTH, DEFAULT_ACCURACY_SESSIONS
from .scoring import Scorer

# Sessions per encoder and scorer call during the check.
CHECK_BATCH_SIZE = 64

EncoderFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class AccuracySettings:
    """Which sessions the check replays: `sessions` from the generator with these exponents and
    seed (0 sessions: no check)."""

    sessions: int = DEFAULT_ACCURACY_SESSIONS
    alpha_length: float = DEFAULT_ACCURACY_ALPHA_LENGTH
    alpha_clicks: float = DEFAULT_ACCURACY_ALPHA_CLICKS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sessions < 0:
            raise ValueError(f"accuracy sessions must be >= 0 (0 = no check), got {self.sessions}")
        for name, alpha in (("alpha_length", self.alpha_length), ("alpha_clicks", self.alpha_clicks)):
            if not alpha > 1:
                raise ValueError(f"accuracy {name} must be > 1, got {alpha}")

    def describe(self) -> str:
        return (
            f"fp32 exact scoring of the same weights on {self.sessions} workload sessions "
            f"(alpha_length {self.alpha_length:g}, alpha_clicks {self.alpha_clicks:g}, seed {self.seed})"
        )


@dataclass(frozen=True)
class AccuracyReport:
    """Mean over sessions of |served top k & reference top k| / k, in [0, 1]."""

    recall_at_k: float
    k: int
    sessions: int
    reference: str


def workload_sessions(settings: AccuracySettings, catalog_size: int) -> SessionBatch:
    workload = SyntheticWorkload(catalog_size, settings.alpha_length, settings.alpha_clicks, settings.seed)
    return SessionGenerator(workload).next_batch(settings.sessions)


def padded(batch: SessionBatch, start: int, stop: int) -> tuple[Tensor, Tensor]:
    """Sessions start..stop-1 as right-padded [B, L] item ids (the last L clicks) and lengths."""
    rows = np.zeros((stop - start, MAX_SESSION_LENGTH), dtype=np.int64)
    lengths = np.zeros(stop - start, dtype=np.int64)
    for row, index in enumerate(range(start, stop)):
        clicks = batch.session(index)[-MAX_SESSION_LENGTH:]
        rows[row, : clicks.size] = clicks
        lengths[row] = clicks.size
    return torch.from_numpy(rows), torch.from_numpy(lengths)


def recall_at_k(served_ids: Tensor, reference_ids: Tensor) -> Tensor:
    """Per row: the share of the reference's k ids that the served k ids contain."""
    hits = (served_ids.unsqueeze(2) == reference_ids.unsqueeze(1)).any(dim=1)
    return hits.float().mean(dim=1)


def measure_recall(
    encoder: EncoderFn,
    served: Scorer,
    reference: Scorer,
    sessions: SessionBatch,
    k: int,
    device: torch.device,
    reference_description: str,
) -> AccuracyReport:
    """Runs every session through `encoder` once and both scorers on the same representations."""
    if len(sessions) == 0:
        raise ValueError("the accuracy check needs at least one session")
    recalls: list[Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(sessions), CHECK_BATCH_SIZE):
            stop = min(start + CHECK_BATCH_SIZE, len(sessions))
            seq, seq_len = (t.to(device) for t in padded(sessions, start, stop))
            representations = encoder(seq, seq_len)
            _, served_ids = served.top_k(representations, k, seq)
            _, reference_ids = reference.top_k(representations, k, seq)
            recalls.append(recall_at_k(served_ids, reference_ids).cpu())
    return AccuracyReport(
        recall_at_k=float(torch.cat(recalls).mean()),
        k=k,
        sessions=len(sessions),
        reference=reference_description,
    )
