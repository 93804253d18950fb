"""Accuracy mode: a reduced precision's recall@k against fp32 exact scoring, measured at start-up."""

from __future__ import annotations

import pytest
import torch
from etude.services.inference import precision
from etude.services.inference.accuracy import (
    AccuracySettings,
    measure_recall,
    recall_at_k,
    workload_sessions,
)
from etude.services.inference.precision import PrecisionUnsupported
from etude.services.inference.recommender import Recommender, RecommenderConfig
from etude.services.inference.scoring import CatalogScorer, FirstItemsScorer

native_bf16 = pytest.mark.skipif(not precision.cpu_bf16_support()[0], reason="this CPU has no native bf16")


def test_recall_at_k_is_the_share_of_the_reference_ids_found() -> None:
    reference = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    served = torch.tensor([[4, 3, 2, 1], [5, 9, 10, 6]])
    assert recall_at_k(served, reference).tolist() == [1.0, 0.5]


def test_a_scorer_that_ignores_the_scores_gets_a_low_recall() -> None:
    table = torch.randn(2001, 8, generator=torch.Generator().manual_seed(0))
    sessions = workload_sessions(AccuracySettings(sessions=100), catalog_size=2000)

    def encoder(seq: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        return table[seq[:, 0]]  # the first click's embedding stands in for a model

    exact = CatalogScorer(table)
    same = measure_recall(encoder, exact, exact, sessions, 21, torch.device("cpu"), "itself")
    wrong = measure_recall(encoder, FirstItemsScorer(2000), exact, sessions, 21, torch.device("cpu"), "fp32")
    assert (same.recall_at_k, same.k, same.sessions) == (1.0, 21, 100)
    assert wrong.recall_at_k < 0.1


def test_fp32_serves_without_an_accuracy_check() -> None:
    recommender = Recommender(RecommenderConfig("gru4rec", 500, embedding_dim=8, warmup=False))
    assert recommender.accuracy is None


@native_bf16
@pytest.mark.parametrize("model", ["gru4rec", "core", "repeatnet"])
def test_bf16_reports_its_recall_against_fp32_on_a_thousand_sessions(model: str) -> None:
    config = RecommenderConfig(model, 20_000, precision="bf16", seed=3, warmup=False)
    recommender = Recommender(config)
    report = recommender.accuracy
    assert report is not None
    assert (report.k, report.sessions) == (21, 1000)
    assert 0.9 <= report.recall_at_k <= 1.0
    assert "fp32 exact scoring" in report.reference and "seed 0" in report.reference


@native_bf16
def test_zero_accuracy_sessions_turns_the_check_off() -> None:
    config = RecommenderConfig(
        "gru4rec", 500, precision="bf16", accuracy=AccuracySettings(sessions=0), warmup=False
    )
    assert Recommender(config).accuracy is None


def test_bf16_is_refused_at_start_up_where_the_cpu_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (False, "no native bf16 flag"))
    with pytest.raises(PrecisionUnsupported, match="bf16 refused on this CPU: no native bf16 flag"):
        RecommenderConfig("gru4rec", 500, precision="bf16")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sessions": -1}, "accuracy sessions must be >= 0"),
        ({"alpha_length": 1.0}, "alpha_length must be > 1"),
    ],
)
def test_bad_accuracy_settings_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AccuracySettings(**changes)  # type: ignore[arg-type]
