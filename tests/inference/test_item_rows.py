"""Item rows depend on the seed and the item id alone: any subset of the catalog is generated
exactly as the whole table holds it, and the encoder's other weights ignore the catalog size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from etude.services.inference.models import build_model
from etude.services.inference.models.item_rows import (
    ROWS_PER_BLOCK,
    ItemInit,
    item_range_rows,
    item_rows,
    item_table,
)

CATALOG_SIZE = 3 * ROWS_PER_BLOCK + 17


def test_any_subset_of_rows_equals_the_same_rows_of_the_whole_table() -> None:
    init = ItemInit.xavier_normal(CATALOG_SIZE + 1, 12)
    table = item_table(init, 7, CATALOG_SIZE, 12)
    scattered = np.sort(np.random.default_rng(0).choice(CATALOG_SIZE + 1, 500, replace=False))
    assert torch.equal(item_rows(init, 7, 12, scattered), table[torch.from_numpy(scattered)])
    first, stop = ROWS_PER_BLOCK - 5, 2 * ROWS_PER_BLOCK + 9
    assert torch.equal(item_range_rows(init, 7, 12, first, stop), table[first:stop])
    assert torch.count_nonzero(table[0]) == 0


def test_rows_follow_the_declared_distribution_and_differ_by_seed() -> None:
    normal = item_table(ItemInit("normal", 0.02), 1, CATALOG_SIZE, 16)[1:]
    assert normal.std().item() == pytest.approx(0.02, rel=0.02)
    uniform = item_table(ItemInit("uniform", 0.25), 1, CATALOG_SIZE, 16)[1:]
    assert -0.25 <= uniform.min().item() and uniform.max().item() <= 0.25
    other_seed = item_table(ItemInit("normal", 0.02), 2, CATALOG_SIZE, 16)[1:]
    assert not torch.equal(normal, other_seed)


def test_rows_are_written_in_place_into_a_slice_of_a_preallocated_table() -> None:
    init = ItemInit("uniform", 0.1)
    table = item_table(init, 4, CATALOG_SIZE, 8)
    scattered = np.sort(np.random.default_rng(1).choice(np.arange(1, CATALOG_SIZE + 1), 900, replace=False))
    first, stop = 5, 2 * ROWS_PER_BLOCK + 3
    held = torch.full((1 + (stop - first) + scattered.size, 8), float("nan"))
    ranged = item_range_rows(init, 4, 8, first, stop, out=held[1 : 1 + stop - first])
    picked = item_rows(init, 4, 8, scattered, out=held[1 + stop - first :])
    assert ranged.data_ptr() == held[1].data_ptr()  # the table's own memory, not a copy
    assert picked.data_ptr() == held[1 + stop - first].data_ptr()
    assert torch.equal(held[1 : 1 + stop - first], table[first:stop])
    assert torch.equal(held[1 + stop - first :], table[torch.from_numpy(scattered)])
    assert torch.isnan(held[0]).all()  # nothing written outside the slices


def test_an_out_that_cannot_take_the_rows_is_refused() -> None:
    init = ItemInit("normal", 1.0)
    with pytest.raises(ValueError, match=r"out must be a contiguous CPU fp32 \[3, 4\] tensor"):
        item_range_rows(init, 0, 4, 1, 4, out=torch.empty(2, 4))
    with pytest.raises(ValueError, match=r"out must be a contiguous CPU fp32 \[2, 4\] tensor"):
        item_rows(init, 0, 4, np.array([1, 2]), out=torch.empty(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        item_rows(init, 0, 4, np.array([1, 2]), out=torch.empty(4, 2).T)


def test_unsorted_or_repeated_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique, ascending"):
        item_rows(ItemInit("normal", 1.0), 0, 4, np.array([3, 2]))
    # Past the first step of the check as well.
    ids = np.arange(1, 3 * 65_536)
    ids[100_000] = ids[99_999]
    with pytest.raises(ValueError, match="unique, ascending"):
        item_rows(ItemInit("normal", 1.0), 0, 4, ids)


def test_encoder_weights_do_not_depend_on_the_catalog_size() -> None:
    small = build_model("gru4rec", 100, 8, seed=3)
    large = build_model("gru4rec", 5000, 8, seed=3)
    assert torch.equal(small.gru.weight_ih_l0, large.gru.weight_ih_l0)
    assert torch.equal(small.dense.weight, large.dense.weight)


def test_a_model_built_without_its_table_holds_no_rows() -> None:
    encoder = build_model("sasrec", 10_000_000, 57, seed=0, item_table=False)
    assert not encoder.has_item_table()
    assert build_model("sasrec", 100, 8).has_item_table()
