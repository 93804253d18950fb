"""The shared scoring head: exact top-k over items 1..C, chunked or not, and noop's head."""

from __future__ import annotations

import pytest
import torch
from etude.services.inference.scoring import CatalogScorer, FirstItemsScorer


def random_catalog(catalog_size: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(catalog_size + 1, dim, generator=torch.Generator().manual_seed(seed))


def brute_force_top_k(
    queries: torch.Tensor, table: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full sort of every real item's score: the definition the scorer must meet."""
    scores = queries @ table[1:].T
    order = torch.argsort(scores, dim=1, descending=True)[:, :k]
    return torch.gather(scores, 1, order), order + 1


@pytest.mark.parametrize(("batch_size", "k"), [(1, 1), (3, 21), (16, 100)])
def test_top_k_equals_a_brute_force_full_sort(batch_size: int, k: int) -> None:
    table = random_catalog(1000, 16)
    queries = torch.randn(batch_size, 16, generator=torch.Generator().manual_seed(1))
    scores, ids = CatalogScorer(table).top_k(queries, k)
    expected_scores, expected_ids = brute_force_top_k(queries, table, k)
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(scores, expected_scores)
    assert scores.dtype == torch.float32 and ids.dtype == torch.int64


def test_padding_item_zero_is_never_returned_even_with_the_best_score() -> None:
    table = random_catalog(50, 8)
    queries = torch.randn(4, 8)
    table[0] = queries.sum(0) * 1000  # would win every row if it were scored
    _, ids = CatalogScorer(table).top_k(queries, 50)  # k = C: every real item, nothing else
    assert (ids >= 1).all() and (ids <= 50).all()
    assert all(len(set(row.tolist())) == 50 for row in ids)


@pytest.mark.parametrize("max_score_elements", [1, 7, 64, 999])
def test_chunked_scoring_equals_unchunked(max_score_elements: int) -> None:
    table = random_catalog(997, 12, seed=3)
    queries = torch.randn(5, 12, generator=torch.Generator().manual_seed(4))
    expected = CatalogScorer(table).top_k(queries, 21)
    chunked = CatalogScorer(table, max_score_elements=max_score_elements).top_k(queries, 21)
    assert torch.equal(chunked[1], expected[1])
    torch.testing.assert_close(chunked[0], expected[0])


def test_k_larger_than_a_chunk_is_still_exact() -> None:
    table = random_catalog(300, 8, seed=5)
    queries = torch.randn(2, 8, generator=torch.Generator().manual_seed(6))
    # Chunks of 10 items, k = 50: every chunk contributes all of its items as candidates.
    scores, ids = CatalogScorer(table, max_score_elements=20).top_k(queries, 50)
    expected_scores, expected_ids = brute_force_top_k(queries, table, 50)
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(scores, expected_scores)


@pytest.mark.parametrize("k", [0, -1, 11])
def test_k_outside_the_catalog_is_refused(k: int) -> None:
    with pytest.raises(ValueError, match=r"k must be in 1\.\.10"):
        CatalogScorer(random_catalog(10, 4)).top_k(torch.randn(1, 4), k)


def test_reduced_precision_is_refused_on_cpu() -> None:
    with pytest.raises(ValueError, match="only supported on CUDA"):
        CatalogScorer(random_catalog(10, 4), compute_dtype=torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_scoring_on_cuda_finds_nearly_the_fp32_top_k() -> None:
    table = random_catalog(100_000, 32).cuda()
    queries = torch.randn(8, 32, device="cuda")
    _, exact = CatalogScorer(table).top_k(queries, 21)
    scores, approx = CatalogScorer(table, compute_dtype=torch.bfloat16).top_k(queries, 21)
    assert scores.dtype == torch.float32
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, approx, strict=True))
    assert overlap >= 0.8 * exact.numel()  # bf16 rounding may swap near-ties


def test_first_items_scorer_returns_items_one_to_k_with_zero_scores() -> None:
    scores, ids = FirstItemsScorer(100).top_k(torch.zeros(3, 4), 5)
    assert ids.tolist() == [[1, 2, 3, 4, 5]] * 3
    assert scores.tolist() == [[0.0] * 5] * 3
