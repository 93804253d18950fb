"""The inference core, without gRPC: validates sessions, batches them into one tensor, runs the
encoder and the scorer, and returns each request's top-k items (of the catalog, or of the
request's own candidate list).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import structlog
import torch
from torch import nn

from etude.limits import MAX_CANDIDATES

from .accuracy import AccuracyReport, AccuracySettings, measure_recall, workload_sessions
from .memory import item_table_bytes, own_memory
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


class InvalidCandidates(InvalidRequest):
    """candidate_ids: too many, an id outside 1..catalog_size, an id twice, or a model whose
    head cannot re-rank candidates."""

    def __init__(self, message: str) -> None:
        super().__init__("candidate_ids", message)


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
    # Longest candidate_ids list a request may carry (etude.limits.MAX_CANDIDATES at most).
    max_candidates: int = MAX_CANDIDATES
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
        if not 1 <= self.max_candidates <= MAX_CANDIDATES:
            raise ValueError(f"max_candidates must be in 1..{MAX_CANDIDATES:,}, got {self.max_candidates}")
        if self.default_k < 1:
            raise ValueError(f"default_k must be >= 1, got {self.default_k}")


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """A validated request: at most MAX_SESSION_LENGTH most recent ids, and k in 1..C; with
    `candidate_ids` (distinct ids in 1..C), k is at most their number and only they are ranked."""

    item_ids: np.ndarray
    k: int
    candidate_ids: np.ndarray | None = None


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
    ids = _ids_in_catalog(item_ids, "item_ids", catalog_size, InvalidSession)
    return SessionQuery(ids[-MAX_SESSION_LENGTH:], k or default_k)


def _ids_in_catalog(
    values: Sequence[int], field: str, catalog_size: int, invalid: Callable[[str], InvalidRequest]
) -> np.ndarray:
    """`values` as int64, each in 1..catalog_size, or `invalid` naming the first that is not."""
    try:
        ids = np.fromiter(values, dtype=np.int64, count=len(values))
    except (OverflowError, ValueError, TypeError) as error:
        raise invalid(f"{field} must be integers in 1..{catalog_size}: {error}") from error
    bad = (ids < 1) | (ids > catalog_size)
    if bad.any():
        position = int(bad.argmax())
        raise invalid(f"{field}[{position}] = {int(ids[position])} is outside 1..{catalog_size}")
    return ids


def validate_candidate_ids(candidate_ids: Sequence[int], catalog_size: int, limit: int) -> np.ndarray:
    """The candidate ids as int64, or InvalidCandidates naming what is wrong and where."""
    if len(candidate_ids) > limit:
        raise InvalidCandidates(
            f"candidate_ids has {len(candidate_ids):,} ids, more than max_candidates = {limit:,}"
        )
    ids = _ids_in_catalog(candidate_ids, "candidate_ids", catalog_size, InvalidCandidates)
    # Refused, not merged: an answer never holds an item twice, and a silently shorter list
    # would hide a bug in the caller's retrieval stage.
    order = np.argsort(ids, kind="stable")
    repeats = np.flatnonzero(ids[order[1:]] == ids[order[:-1]])
    if repeats.size:
        # The earliest position that repeats an id, and that id's first position.
        later = order[repeats + 1]
        position = int(later.min())
        first = int(np.flatnonzero(ids == ids[position])[0])
        raise InvalidCandidates(
            f"candidate_ids[{position}] = {int(ids[position])} repeats candidate_ids[{first}]: "
            "each candidate may appear once"
        )
    return ids


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
        # The tables are built and nothing has run yet: the memory building them took.
        self.built_memory = own_memory()
        # The default is a server setting, not a request value: a tiny catalog shrinks it.
        self.default_k = min(self.config.default_k, self.config.catalog_size)
        self.parameter_count = sum(p.numel() for p in self.encoder.parameters())
        # Item rows with the padding row, and the bytes of every copy of them (the model's table,
        # a reduced-precision scoring copy): what the measured memory per server is set against.
        self.rows_held = self.config.catalog_size + 1
        holders: list[object] = [self.encoder, self.scorer]
        if isinstance(self.served_encoder, nn.Module) and self.served_encoder is not self.encoder:
            holders.append(self.served_encoder)
        self.table_bytes = item_table_bytes(holders, self.rows_held)
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

    @property
    def candidates_refused(self) -> str | None:
        """Why this model cannot re-rank candidate lists; None when it can."""
        return self.scorer.candidates_refused

    def validate(self, item_ids: Sequence[int], k: int, candidate_ids: Sequence[int] = ()) -> SessionQuery:
        """Checks one request; raises InvalidSession, InvalidK or InvalidCandidates naming the
        field and its range. An empty `candidate_ids` means the whole catalog."""
        query = validate_query(
            item_ids, k, self.config.catalog_size, self.config.max_request_items, self.default_k
        )
        if len(candidate_ids) == 0:
            return query
        candidates = self._validate_candidates(candidate_ids)
        return SessionQuery(query.item_ids, min(query.k, candidates.size), candidates)

    def _validate_candidates(self, candidate_ids: Sequence[int]) -> np.ndarray:
        """The candidate ids as int64, or InvalidCandidates naming what is wrong and where."""
        if self.candidates_refused is not None:
            raise InvalidCandidates(
                f"candidate_ids refused by model {self.config.model}: {self.candidates_refused}"
            )
        return validate_candidate_ids(candidate_ids, self.config.catalog_size, self.config.max_candidates)

    def recommend_batch(self, queries: Sequence[SessionQuery]) -> list[Recommendation]:
        """Answers validated queries with one encoder call over all of them, then one scorer
        call for those scoring the catalog and one for those re-ranking candidates (blocking).

        A batch may mix both: the encoder's rows are split between the two heads. Candidate
        lists are padded to the batch's longest (pads score -inf): one gather and one batched
        product for all of them, and a load's lists all have one length, so pads cost nothing
        there.
        """
        if not queries:
            return []
        if self._computes_nothing:
            # noop: the answer its head gives (items 1..k, zero scores) without the dozen torch
            # calls of the model path, so that it measures the serving infrastructure alone.
            return [_noop_answer(q) for q in queries]
        item_seq, lengths = padded_sessions(queries)
        catalog_rows = [row for row, q in enumerate(queries) if q.candidate_ids is None]
        candidate_rows = [row for row, q in enumerate(queries) if q.candidate_ids is not None]
        answers: list[Recommendation] = []
        with torch.inference_mode():
            seq = torch.from_numpy(item_seq).to(self.device, non_blocking=True)
            seq_len = torch.from_numpy(lengths).to(self.device, non_blocking=True)
            session_repr = self.served_encoder(seq, seq_len)
            ranked: dict[int, tuple[list[int], list[float]]] = {}
            if catalog_rows:
                rows_repr, rows_seq = self._rows(session_repr, seq, catalog_rows, len(queries))
                max_k = max(queries[row].k for row in catalog_rows)
                ranked.update(_by_row(catalog_rows, *self.scorer.top_k(rows_repr, max_k, rows_seq)))
            if candidate_rows:
                rows_repr, rows_seq = self._rows(session_repr, seq, candidate_rows, len(queries))
                candidates = self._padded_candidates([queries[row] for row in candidate_rows])
                max_k = max(queries[row].k for row in candidate_rows)
                scored = self.scorer.score_candidates(rows_repr, candidates, max_k, rows_seq)
                ranked.update(_by_row(candidate_rows, *scored))
        for row, q in enumerate(queries):
            ids, scores = ranked[row]
            answers.append(Recommendation(ids[: q.k], scores[: q.k]))
        return answers

    def _rows(
        self, session_repr: torch.Tensor, seq: torch.Tensor, rows: list[int], batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The representations and sessions of `rows` (no copy when they are the whole batch)."""
        if len(rows) == batch_size:
            return session_repr, seq
        index = torch.tensor(rows, device=session_repr.device)
        return session_repr.index_select(0, index), seq.index_select(0, index)

    def _padded_candidates(self, queries: Sequence[SessionQuery]) -> torch.Tensor:
        """[B, longest list] int64 on the device, each row's candidates then zeros."""
        lists = [q.candidate_ids for q in queries if q.candidate_ids is not None]
        counts = np.fromiter((len(c) for c in lists), np.int64, count=len(lists))
        padded = np.zeros((len(lists), int(counts.max())), dtype=np.int64)
        padded[np.arange(padded.shape[1]) < counts[:, None]] = np.concatenate(lists)
        return torch.from_numpy(padded).to(self.device, non_blocking=True)

    @property
    def max_candidates(self) -> int:
        """ModelInfo.max_candidates: the longest candidate list, 0 when the model refuses them."""
        return 0 if self.candidates_refused is not None else self.config.max_candidates

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
            "candidates": self.candidates_refused or "re-ranked from their own rows, scores as the full pass",
        }


def _noop_answer(query: SessionQuery) -> Recommendation:
    """noop's answer: the first k items in id order (of the catalog, or of the candidates)."""
    if query.candidate_ids is None:
        return Recommendation(list(range(1, query.k + 1)), [0.0] * query.k)
    return Recommendation(np.sort(query.candidate_ids)[: query.k].tolist(), [0.0] * query.k)


def _by_row(
    rows: list[int], scores: torch.Tensor, ids: torch.Tensor
) -> dict[int, tuple[list[int], list[float]]]:
    """Each batch row's ranked ids and scores, from one transfer and one conversion."""
    all_ids, all_scores = ids.cpu().tolist(), scores.cpu().tolist()
    return {row: (all_ids[index], all_scores[index]) for index, row in enumerate(rows)}
