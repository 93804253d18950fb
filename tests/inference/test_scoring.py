"""The shared scoring head: exact top-k over items 1..C, chunked or not, and noop's head."""

from __future__ import annotations

import pytest
import torch
from etude.services.inference import precision
from etude.services.inference.precision import PrecisionUnsupported
from etude.services.inference.scoring import (
    CPU_SCORE_BLOCK_BYTES,
    DEFAULT_MAX_SCORE_ELEMENTS,
    MAX_CHUNK_ITEMS,
    MIN_CHUNK_ITEMS,
    CatalogScorer,
    FirstItemsScorer,
    chunk_items_for,
    chunked_top_k,
)


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


def test_fp16_is_refused_on_cpu_with_the_reason() -> None:
    with pytest.raises(PrecisionUnsupported, match="fp16 needs a cuda device"):
        CatalogScorer(random_catalog(10, 4), compute_dtype=torch.float16)


def test_bf16_is_refused_on_a_cpu_without_native_bf16_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (False, "no avx512_bf16 here"))
    with pytest.raises(PrecisionUnsupported, match="bf16 refused on this CPU: no avx512_bf16 here"):
        CatalogScorer(random_catalog(10, 4), compute_dtype=torch.bfloat16)
    with pytest.raises(PrecisionUnsupported, match="no avx512_bf16 here"):
        precision.require_supported("bf16", "cpu")


def test_bf16_on_a_cpu_with_native_bf16_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (True, "native bf16 (avx512_bf16)"))
    precision.require_supported("bf16", "cpu")  # no exception


@pytest.mark.parametrize(
    ("batch_size", "catalog_size", "k", "chunk_items"),
    [
        (1, 1000, 1, 1000),  # one chunk
        (3, 1000, 21, 7),  # many tiny chunks, plain top-k per chunk
        (5, 997, 21, 100),  # C not a multiple of the chunk: a 97-item tail
        (4, 4098, 21, 2048),  # block maxima per chunk; a 2-item tail, k > the tail
        (8, 5000, 21, 2048),  # block maxima (128 blocks of 16) on full chunks
        (2, 4096, 100, 4096),  # k large against the blocks: falls back to a plain top-k
        (16, 3000, 50, 1600),  # 100 blocks for k = 50: plain; tail of 1400
        (7, 40_000, 33, 16_384),  # 16k-item chunks, block maxima, tail of 7,232
        (2, 300, 300, 64),  # k = C: every item, in order
    ],
)
def test_chunked_top_k_equals_a_full_top_k(
    batch_size: int, catalog_size: int, k: int, chunk_items: int
) -> None:
    generator = torch.Generator().manual_seed(catalog_size + k)
    items = torch.randn(catalog_size, 16, generator=generator)
    queries = torch.randn(batch_size, 16, generator=generator)
    scores, ids = chunked_top_k(queries, items, k, chunk_items)
    expected_scores, expected_ids = torch.topk(queries @ items.T, k, dim=1)
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(scores, expected_scores)
    assert scores.dtype == torch.float32 and ids.dtype == torch.int64


@pytest.mark.parametrize("batch_size", [1, 8, 32, 64, 128, 256, 1024])
def test_cpu_chunk_size_follows_the_cache_rule_and_the_score_bound(batch_size: int) -> None:
    chunk = chunk_items_for(batch_size, "cpu")
    score_bound = DEFAULT_MAX_SCORE_ELEMENTS // batch_size
    assert min(MIN_CHUNK_ITEMS, score_bound) <= chunk <= min(MAX_CHUNK_ITEMS, score_bound)
    assert chunk & (chunk - 1) == 0  # a power of two: whole groups of SCORE_GROUPS
    assert batch_size * chunk * 4 <= CPU_SCORE_BLOCK_BYTES or chunk in (MIN_CHUNK_ITEMS, score_bound)
    assert chunk_items_for(batch_size, "cpu", max_score_elements=batch_size * 10) == 10
    assert chunk_items_for(batch_size, "cuda") == score_bound


def test_padding_item_zero_is_never_returned_by_the_chunked_scorer() -> None:
    table = random_catalog(5000, 8, seed=9)
    queries = torch.randn(6, 8, generator=torch.Generator().manual_seed(10))
    table[0] = queries.sum(0) * 1000  # would win every row if it were scored
    for max_score_elements in (6 * 2048, 6 * 333, 1 << 25):
        _, ids = CatalogScorer(table, max_score_elements=max_score_elements).top_k(queries, 21)
        assert (ids >= 1).all() and (ids <= 5000).all()


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    hits = sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b, strict=True))
    return hits / a.numel()


@pytest.mark.skipif(not precision.cpu_bf16_support()[0], reason="this CPU has no native bf16")
def test_bf16_on_cpu_keeps_the_fp32_top_k_and_never_returns_item_zero() -> None:
    table = random_catalog(50_000, 32, seed=11)
    queries = torch.randn(64, 32, generator=torch.Generator().manual_seed(12))
    table[0] = queries.sum(0) * 1000
    _, exact = CatalogScorer(table).top_k(queries, 21)
    scores, approx = CatalogScorer(table, compute_dtype=torch.bfloat16).top_k(queries, 21)
    assert scores.dtype == torch.float32
    assert (approx >= 1).all()
    # Scores re-scored in fp32 come back sorted; only the table's bf16 rounding can swap items.
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    assert _overlap(approx, exact) >= 0.97


@pytest.mark.skipif(not precision.cpu_bf16_support()[0], reason="this CPU has no native bf16")
def test_bf16_candidates_rescored_against_the_fp32_table_give_the_fp32_answers() -> None:
    table = random_catalog(50_000, 32, seed=13)
    queries = torch.randn(64, 32, generator=torch.Generator().manual_seed(14))
    _, exact = CatalogScorer(table).top_k(queries, 21)
    scorer = CatalogScorer(table, compute_dtype=torch.bfloat16, rescore_table=table)
    scores, approx = scorer.top_k(queries, 21)
    # Returned scores are the fp32 scores of the returned items, whatever the bf16 selection.
    torch.testing.assert_close(scores, torch.einsum("bd,bkd->bk", queries, table[approx]))
    assert _overlap(approx, exact) >= 0.995


def test_a_rescore_table_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="rescore_table must be fp32"):
        CatalogScorer(random_catalog(10, 4), compute_dtype=torch.bfloat16, rescore_table=torch.zeros(11, 5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_on_cuda_keeps_the_fp32_top_k(dtype: torch.dtype) -> None:
    table = random_catalog(100_000, 32).cuda()
    queries = torch.randn(8, 32, device="cuda")
    _, exact = CatalogScorer(table).top_k(queries, 21)
    scores, approx = CatalogScorer(table, compute_dtype=dtype).top_k(queries, 21)
    assert scores.dtype == torch.float32 and (approx >= 1).all()
    assert _overlap(approx, exact) >= 0.95


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_chunked_top_k_on_cuda_equals_a_full_top_k() -> None:
    items = torch.randn(70_000, 32, device="cuda")
    queries = torch.randn(16, 32, device="cuda")
    scores, ids = chunked_top_k(queries, items, 21, 8192)
    expected_scores, expected_ids = torch.topk(queries @ items.T, 21, dim=1)
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(scores, expected_scores)


def test_first_items_scorer_returns_items_one_to_k_with_zero_scores() -> None:
    scores, ids = FirstItemsScorer(100).top_k(torch.zeros(3, 4), 5)
    assert ids.tolist() == [[1, 2, 3, 4, 5]] * 3
    assert scores.tolist() == [[0.0] * 5] * 3
