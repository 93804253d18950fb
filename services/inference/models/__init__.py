"""The model registry: name -> builder(catalog_size, embedding_dim, **options) and its scorer.

Adding a model is one entry in MODELS. Entries name their builder and scorer factory as
"module:function" and are imported on first use, so listing the models (the CLI's --help)
needs no torch and a model's own imports cost nothing until it is served.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..scoring import Scorer
    from .base import SessionEncoder

_PACKAGE = "etude.services.inference.models"

REPEATNET_CANDIDATES_REFUSED = (
    "repeatnet's scores are probabilities normalised over the whole catalog (its explore "
    "softmax), so a candidate's score needs a full-catalog pass, which re-ranking never does"
)


# The shared exact MIPS head over item_embeddings(): what a model file carries and a catalog
# shard serves; models with heads of their own name another scorer.
SHARED_SCORER = "etude.services.inference.scoring:catalog_scorer"


@dataclass(frozen=True)
class ModelEntry:
    """One servable model: how to build it and how to score with it."""

    summary: str
    # "module:function" returning a SessionEncoder from (catalog_size, embedding_dim, **options).
    builder: str
    # "module:function" returning a Scorer from (encoder, compute_dtype=, max_score_elements=):
    # the shared exact MIPS head unless the model scores differently.
    scorer: str = SHARED_SCORER
    # Why the model's head cannot re-rank candidate lists (RecommendRequest.candidate_ids);
    # None when it can. Its scorer says the same at run time; this is for the spec's checks.
    candidates_refused: str | None = None

    def build(self, catalog_size: int, embedding_dim: int, **options: Any) -> SessionEncoder:
        return _resolve(self.builder)(catalog_size, embedding_dim, **options)  # type: ignore[no-any-return]

    def make_scorer(self, encoder: SessionEncoder, **settings: Any) -> Scorer:
        return _resolve(self.scorer)(encoder, **settings)  # type: ignore[no-any-return]


def _resolve(reference: str) -> Callable[..., Any]:
    module, _, function = reference.partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


MODELS: dict[str, ModelEntry] = {
    "noop": ModelEntry(
        "computes nothing: measures the serving infrastructure alone",
        f"{_PACKAGE}.noop:build_noop",
        scorer="etude.services.inference.scoring:first_items_scorer",
    ),
    "gru4rec": ModelEntry(
        "GRU4Rec: one GRU layer (hidden 128, no bias), dense back to d",
        f"{_PACKAGE}.gru4rec:build_gru4rec",
    ),
    "narm": ModelEntry(
        "NARM: GRU (hidden 128) with an attention over its states (local + global encoder)",
        f"{_PACKAGE}.narm:build_narm",
    ),
    "stamp": ModelEntry(
        "STAMP: attention over the session against the last click and the session mean",
        f"{_PACKAGE}.stamp:build_stamp",
    ),
    "sasrec": ModelEntry(
        "SASRec: 2 causal self-attention layers, 2 heads, positions; the last position",
        f"{_PACKAGE}.sasrec:build_sasrec",
    ),
    "core": ModelEntry(
        "CORE: transformer weights over the raw item embeddings; cosine scores / 0.07",
        f"{_PACKAGE}.core:build_core",
        scorer=f"{_PACKAGE}.core:core_scorer",
    ),
    "lightsans": ModelEntry(
        "LightSANs: low-rank item-to-interest attention with decoupled positions",
        f"{_PACKAGE}.lightsans:build_lightsans",
    ),
    "sine": ModelEntry(
        "SINE: sparse-interest network, 3 of 50 prototypes, interest aggregation",
        f"{_PACKAGE}.sine:build_sine",
    ),
    "srgnn": ModelEntry(
        "SR-GNN: one gated graph step over the session graph, attention readout",
        f"{_PACKAGE}.srgnn:build_srgnn",
    ),
    "gcsan": ModelEntry(
        "GC-SAN: SR-GNN's gated graph step, then self-attention over the node states",
        f"{_PACKAGE}.gcsan:build_gcsan",
    ),
    "repeatnet": ModelEntry(
        "RepeatNet: GRU (64) with repeat and explore decoders; explore scores a second N x 128 matrix",
        f"{_PACKAGE}.repeatnet:build_repeatnet",
        scorer=f"{_PACKAGE}.repeatnet:repeatnet_scorer",
        candidates_refused=REPEATNET_CANDIDATES_REFUSED,
    ),
}

MODEL_NAMES = tuple(MODELS)


def build_model(
    name: str,
    catalog_size: int,
    embedding_dim: int,
    *,
    seed: int = 0,
    item_table: bool = True,
    **options: Any,
) -> SessionEncoder:
    """Builds model `name` with random weights drawn from `seed`, in eval mode, on the CPU.

    The global random state is left untouched, so two builds with one seed are identical. The
    item table's rows come from `seed` and the item ids alone (models/item_rows.py), so a
    catalog shard generates exactly its part of them; `item_table=False` leaves the table on
    the meta device (no memory: a router's encoder, whose rows live in the shards).
    """
    import torch
    from torch import nn

    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = MODELS[name].build(catalog_size, embedding_dim, **options)
    if item_table and isinstance(getattr(encoder, "item_embedding", None), nn.Embedding):
        encoder.materialise_item_table(seed)
    return encoder.eval()
