"""Which models a catalog shard can serve: those scored by the shared inner product over their
item rows. Here, beside the models, because the router, the shards and the spec validator all ask."""

from __future__ import annotations

from .models import MODELS, SHARED_SCORER

__all__ = ["ModelNotShardable", "require_shardable"]

# A shard holds rows scored by SHARED_SCORER (s . E_i). CORE (cosine over a normalised copy) and
# RepeatNet (a second catalog-sized matrix, scores that depend on the session's items) have heads
# of their own, which a shard does not serve.


class ModelNotShardable(ValueError):
    """A model whose scoring head is not the shared inner-product scorer."""


def require_shardable(model: str) -> None:
    """Raises ModelNotShardable, saying why, for models with heads of their own (and noop)."""
    if model not in MODELS:
        raise ModelNotShardable(f"model must be one of {sorted(MODELS)}, got {model!r}")
    if model == "noop":
        raise ModelNotShardable("model noop computes nothing: there is no catalog to shard")
    if MODELS[model].scorer != SHARED_SCORER:
        raise ModelNotShardable(
            f"model {model} scores with a head of its own ({MODELS[model].scorer.rpartition(':')[2]}), not "
            "the shared inner product over the item rows, so its catalog cannot be sharded: "
            "serve it unsharded"
        )
