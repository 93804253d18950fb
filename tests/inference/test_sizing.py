"""The memory estimate of a model's catalog tables matches what the built model really holds."""

from __future__ import annotations

import pytest
from etude.services.inference.models import MODEL_NAMES, build_model
from etude.services.inference.sizing import estimated_catalog_bytes

CATALOG_SIZE = 20_000
DIM = 16


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_estimate_covers_the_catalog_sized_tensors_the_model_holds(name: str) -> None:
    model = build_model(name, CATALOG_SIZE, DIM)
    tensors = [*model.parameters(), *model.buffers()]
    catalog_sized = sum(
        t.numel() * t.element_size() for t in tensors if t.dim() >= 1 and t.shape[0] == CATALOG_SIZE + 1
    )
    estimate = estimated_catalog_bytes(name, CATALOG_SIZE, DIM)
    if name == "core":
        # The normalised copy is made by its scorer at load, not held by the encoder.
        assert estimate == 2 * catalog_sized
    else:
        assert estimate == catalog_sized
    everything = sum(t.numel() * t.element_size() for t in tensors)
    # At 20,000 items the catalog tables are most of the model already.
    assert estimate == 0 or everything < 3 * estimate
