"""The inference core, without gRPC: validates sessions, batches them into one tensor, runs the
encoder and the scorer, and returns each request's top-k items.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import structlog
import torch
from torch import nn

from .accuracy import AccuracyReport, AccuracySettings, measure_recall, workload_sessions
from .model_file import (
    MODEL_FILE_RUNTIMES,
    LoadedModelFile,
    ModelFileError,
    load_model_file,
    prepare_model_file,
)
from .models import MODELS, build_model
from .models.base import (
    MAX_SESSION_LENGTH,
    SessionEncoder,
    resolve_embedding_dim,
)
from .options import (
    DEFAULT_EMBEDDING_POLICY,
    DEFAULT_K,
    DEFAULT_MAX_REQUEST_ITEMS,
    EMBEDDING_POLICIES,
    RUNTIMES,
)
from .precision import PRECISIONS, require_supported
from .runtime import prepare_encoder
from .scoring import DEFAULT_MAX_SCORE_ELEMENTS, CatalogScorer, Scorer

_log = structlog.get_logger()

# Batch sizes run once at start-up (jit profiles and specialises on its first calls).
WARMUP_BATCH_SIZES = (1, 2, 7, 32)


class InvalidRequest(ValueError):
    """A request the model cannot answer; `field` names the offending request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidSession(InvalidRequest):
    """The session's item ids: empty, too long, or an id outside 1..catalog_size."""

    def __init__(self, message: str) -> None:
        super().__init__("item_ids", message)


class InvalidK(InvalidRequest):
    """k outside 1..catalog_size (0 means the default)."""

    def __init__(self, message: str) -> None:
        super().__init__("k", message)


@dataclass(frozen=True)
class RecommenderConfig:
    """Everything that decides what is served; defaults live here and in the CLI flags."""

    model: str
    catalog_size: int
    embedding_dim: int = 0
    embedding_policy: str = DEFAULT_EMBEDDING_POLICY
    device: str = "cpu"
    runtime: str = "eager"
    precision: str = "fp32"
    max_request_items: int = DEFAULT_MAX_REQUEST_ITEMS
    default_k: int = DEFAULT_K
    seed: int = 0
    max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS
    model_options: Mapping[str, Any] = field(default_factory=dict)
    warmup: bool = True
    # A TorchScript model file (services/inference/model_file.py) served instead of the registry
    # model; `model` is then only its label, and catalog_size 0 takes C from the file's table.
    model_path: str = ""
    # Accuracy mode: with a reduced precision, recall@k against fp32 is measured at start-up.
    accuracy: AccuracySettings = field(default_factory=AccuracySettings)

    def __post_init__(self) -> None:
        if self.model_path:
            if self.catalog_size < 0:
                raise ValueError(
                    f"catalog_size must be >= 0 (0 = from the model file), got {self.catalog_size}"
                )
            if self.runtime not in MODEL_FILE_RUNTIMES:
                raise ModelFileError(
                    f"runtime {self.runtime!r} cannot serve a model file (--model-path), which is "
                    "TorchScript already: use 'jit' (freezes and optimises it) or 'eager' "
                    "(serves it as loaded)"
                )
        else:
            if self.model not in MODELS:
                raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
            if self.catalog_size < 1:
                raise ValueError(f"catalog_size must be >= 1, got {self.catalog_size}")
        if self.embedding_policy not in EMBEDDING_POLICIES:
            raise ValueError(
                f"embedding_policy must be one of {list(EMBEDDING_POLICIES)}, got {self.embedding_policy!r}"
            )
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {self.runtime!r}")
        # PrecisionUnsupported (a ValueError) names the reason: unknown, fp16 off CUDA, or a CPU
        # without native bf16.
        require_supported(self.precision, self.device)
        if self.max_request_items < 1:
            raise ValueError(f"max_request_items must be >= 1, got {self.max_request_items}")
        if self.default_k < 1:
            raise ValueError(f"default_k must be >= 1, got {self.default_k}")


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """A validated request: at most MAX_SESSION_LENGTH most recent ids, and k in 1..C."""

    item_ids: np.ndarray
    k: int


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Top-k items of one session, best first, with their scores."""

    item_ids: list[int]
    scores: list[float]


def validate_query(
    item_ids: Sequence[int], k: int, catalog_size: int, max_request_items: int, default_k: int
) -> SessionQuery:
    """One request checked: raises InvalidSession or InvalidK naming the field and its range."""
    if len(item_ids) == 0:
        raise InvalidSession("item_ids must not be empty")
    if len(item_ids) > max_request_items:
        raise InvalidSession(
            f"item_ids has {len(item_ids)} items, more than max_request_items = {max_request_items}"
        )
    if k < 0 or k > catalog_size:
        raise InvalidK(f"k = {k} is outside 1..{catalog_size} (0 means the default, {default_k})")
    try:
        ids = np.fromiter(item_ids, dtype=np.int64, count=len(item_ids))
    except (OverflowError, ValueError, TypeError) as error:
        raise InvalidSession(f"item_ids must be integers in 1..{catalog_size}: {error}") from error
    bad = (ids < 1) | (ids > catalog_size)
    if bad.any():
        position = int(bad.argmax())
        raise InvalidSession(f"item_ids[{position}] = {int(ids[position])} is outside 1..{catalog_size}")
    return SessionQuery(ids[-MAX_SESSION_LENGTH:], k or default_k)


def padded_sessions(queries: Sequence[SessionQuery]) -> tuple[np.ndarray, np.ndarray]:
    """(item_seq [B, L] right-padded with 0, lengths [B]) of a batch of validated queries."""
    lengths = np.fromiter((len(q.item_ids) for q in queries), np.int64, count=len(queries))
    # Right-padded [B, L] in one scatter: row b holds its items at 0..len_b-1.
    item_seq = np.zeros((len(queries), MAX_SESSION_LENGTH), dtype=np.int64)
    item_seq[np.arange(MAX_SESSION_LENGTH) < lengths[:, None]] = np.concatenate([q.item_ids for q in queries])
    return item_seq, lengths


class Recommender:
    """One model, its scoring head and runtime, answering batches of validated sessions.

    `validate` is cheap and meant for the caller's thread; `recommend_batch` blocks (it runs
    the model) and belongs in the batcher's model thread.
    """

    def __init__(self, config: RecommenderConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r} requested but CUDA is not available")
        self.model_file: LoadedModelFile | None = None
        self.encoder: nn.Module
        self.scorer: Scorer
        if config.model_path:
            self._load_model_file(config)
        else:
            self.embedding_dim = resolve_embedding_dim(
                config.catalog_size, config.embedding_dim, config.embedding_policy
            )
            self.encoder = build_model(
                config.model,
                config.catalog_size,
                self.embedding_dim,
                seed=config.seed,
                **dict(config.model_options),
            ).to(self.device)
            self.scorer = self._make_scorer(config.precision)
            self.served_encoder = prepare_encoder(self.encoder, config.runtime)
        # The default is a server setting, not a request value: a tiny catalog shrinks it.
        self.default_k = min(self.config.default_k, self.config.catalog_size)
        self.parameter_count = sum(p.numel() for p in self.encoder.parameters())
        self._computes_nothing = not config.model_path and config.model == "noop"
        if config.warmup:
            self.warm_up()
        # Accuracy mode: what a reduced precision costs in answers, measured before serving.
        self.accuracy: AccuracyReport | None = None
        if config.precision != "fp32" and config.accuracy.sessions > 0:
            self.accuracy = self.check_accuracy(config.accuracy)

    def _make_scorer(self, precision: str) -> Scorer:
        """The model's head over its own table, scoring in `precision`."""
        if self.model_file is not None:
            table = self.model_file.item_table
            return CatalogScorer(
                table,
                compute_dtype=PRECISIONS[precision],
                max_score_elements=self.config.max_score_elements,
                # An fp32 table the module holds anyway re-scores a reduced precision's candidates.
                rescore_table=table if table.dtype == torch.float32 else None,
            )
        if not isinstance(self.encoder, SessionEncoder):
            raise TypeError(f"a registry model must be a SessionEncoder, got {type(self.encoder).__name__}")
        return MODELS[self.config.model].make_scorer(
            self.encoder,
            compute_dtype=PRECISIONS[precision],
            max_score_elements=self.config.max_score_elements,
        )

    def check_accuracy(self, settings: AccuracySettings) -> AccuracyReport:
        """recall@default_k of the served scorer against fp32 exact scoring of the same weights.

        The fp32 reference head exists only during the check (over the fp32 table the encoder
        keeps anyway, so it costs no second copy of the catalog for most heads).
        """
        sessions = workload_sessions(settings, self.config.catalog_size)
        reference = self._make_scorer("fp32")
        try:
            report = measure_recall(
                self.served_encoder,
                self.scorer,
                reference,
                sessions,
                self.default_k,
                self.device,
                settings.describe(),
            )
        finally:
            del reference
        _log.info(
            "accuracy_checked",
            precision=self.config.precision,
            recall_at_k=round(report.recall_at_k, 5),
            k=report.k,
            sessions=report.sessions,
        )
        return report

    def _load_model_file(self, config: RecommenderConfig) -> None:
        """Serves a checked TorchScript file with the shared scorer; raises ModelFileError."""
        loaded = load_model_file(config.model_path, catalog_size=config.catalog_size, device=self.device)
        self.model_file = loaded
        # The file decides C (when not given) and the label GetModelInfo reports.
        self.config = replace(config, model=loaded.name, catalog_size=loaded.catalog_size)
        self.embedding_dim = loaded.embedding_dim
        self.encoder = loaded.module
        self.scorer = self._make_scorer(config.precision)
        self.served_encoder = prepare_model_file(loaded.module, config.runtime)

    def warm_up(self, batch_sizes: Sequence[int] = WARMUP_BATCH_SIZES) -> None:
        """Runs a few batch sizes (twice: jit optimises on its second call) before serving."""
        rng = np.random.default_rng(0)
        for batch_size in batch_sizes:
            queries = [
                SessionQuery(
                    rng.integers(1, self.config.catalog_size + 1, size=length, dtype=np.int64),
                    self.default_k,
                )
                for length in rng.integers(1, MAX_SESSION_LENGTH + 1, size=batch_size)
            ]
            for _ in range(2):
                self.recommend_batch(queries)
        _log.info("warmed_up", batch_sizes=list(batch_sizes), runtime=self.config.runtime)

    def validate(self, item_ids: Sequence[int], k: int) -> SessionQuery:
        """Checks one request; raises InvalidSession or InvalidK naming the field and range."""
        return validate_query(
            item_ids, k, self.config.catalog_size, self.config.max_request_items, self.default_k
        )

    def recommend_batch(self, queries: Sequence[SessionQuery]) -> list[Recommendation]:
        """Answers validated queries with one encoder call and one scorer call (blocking)."""
        if not queries:
            return []
        if self._computes_nothing:
            # noop: the answer its head gives (items 1..k, zero scores) without the dozen torch
            # calls of the model path, so that it measures the serving infrastructure alone.
            return [Recommendation(list(range(1, q.k + 1)), [0.0] * q.k) for q in queries]
        item_seq, lengths = padded_sessions(queries)
        max_k = max(q.k for q in queries)
        with torch.inference_mode():
            seq = torch.from_numpy(item_seq).to(self.device, non_blocking=True)
            seq_len = torch.from_numpy(lengths).to(self.device, non_blocking=True)
            scores, ids = self.scorer.top_k(self.served_encoder(seq, seq_len), max_k, seq)
            # One transfer and one conversion for the whole batch, then slice per request.
            all_ids = ids.cpu().tolist()
            all_scores = scores.cpu().tolist()
        return [Recommendation(all_ids[row][: q.k], all_scores[row][: q.k]) for row, q in enumerate(queries)]

    def details(self) -> dict[str, str]:
        """What GetModelInfo reports beyond its fixed fields."""
        if self.model_file is not None:
            model_details, embedding_policy = self.model_file.details(), "model_file"
        else:
            model_details = self.encoder.details() if isinstance(self.encoder, SessionEncoder) else {}
            embedding_policy = "explicit" if self.config.embedding_dim > 0 else self.config.embedding_policy
        return {
            **model_details,
            "precision": self.config.precision,
            "embedding_policy": embedding_policy,
            "default_k": str(self.default_k),
            "torch_threads": str(torch.get_num_threads()),
            "torch_version": torch.__version__,
            "seed": str(self.config.seed),
            "pid": str(os.getpid()),
        }
