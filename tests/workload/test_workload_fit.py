"""The generated workload has the statistics it was asked for, and the fit that checks it is right.

All samples come from fixed seeds, so these tests are deterministic; each bound is many standard
errors wide for a correct generator and far too narrow for a wrong distribution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from etude.services.workload.generator import (
    MAX_CLICK_COUNT,
    ItemPopularity,
    SessionGenerator,
    SyntheticWorkload,
    draw_power_law,
    fit_power_law_exponent,
)

EXPONENT_PAIRS = [(2.5, 2.0), (1.8, 1.5), (3.0, 1.2)]


@pytest.mark.parametrize(("alpha_length", "alpha_clicks"), EXPONENT_PAIRS)
def test_fitted_session_length_exponent_is_within_5_percent(alpha_length: float, alpha_clicks: float) -> None:
    """Lengths above max_session_length were cut to it, so the fit reads those as censored."""
    workload = SyntheticWorkload(1_000, alpha_length, alpha_clicks, seed=21)
    generator = SessionGenerator(workload)
    lengths = np.concatenate([generator.next_batch(50_000).lengths for _ in range(4)])
    fitted = fit_power_law_exponent(lengths, x_max=workload.max_session_length)
    assert fitted == pytest.approx(alpha_length, rel=0.05)


@pytest.mark.parametrize(("alpha_length", "alpha_clicks"), EXPONENT_PAIRS)
def test_fitted_click_count_exponent_is_within_5_percent(alpha_length: float, alpha_clicks: float) -> None:
    """The C click counts drawn up front (Algorithm 1, line 7) follow the power law exactly.

    What the sampled clicks follow is these counts' empirical distribution (pinned by the next
    test); a power law fitted to per-item tallies of a finite sample of clicks would measure the
    sampling noise of rarely clicked items as much as alpha_clicks, so it is not tested.
    """
    workload = SyntheticWorkload(200_000, alpha_length, alpha_clicks, seed=22)
    counts = ItemPopularity.for_workload(workload).click_counts
    assert counts.min() >= 1
    fitted = fit_power_law_exponent(counts, x_max=MAX_CLICK_COUNT)
    assert fitted == pytest.approx(alpha_clicks, rel=0.05)


def test_sampled_clicks_follow_the_empirical_click_count_distribution() -> None:
    """Pearson's chi-square of item tallies against N * counts / S, over all items.

    With C - 1 degrees of freedom its mean is C - 1 and its standard deviation sqrt(2 (C - 1)):
    a correct sampler lands within a few deviations, a sampler that ignored the counts (uniform
    ids) or was off by one item would land thousands away.
    """
    workload = SyntheticWorkload(2_000, 2.0, 2.2, seed=23)
    generator = SessionGenerator(workload)
    counts = generator.popularity.click_counts
    item_ids = np.concatenate([generator.next_batch(40_000).item_ids for _ in range(20)])
    observed = np.bincount(item_ids, minlength=counts.size + 1)[1:]
    expected = item_ids.size * counts / counts.sum()
    assert expected.min() > 50  # chi-square's normal approximation holds
    chi_square = float(np.sum((observed - expected) ** 2 / expected))
    degrees = counts.size - 1
    assert abs(chi_square - degrees) < 5 * math.sqrt(2 * degrees)


def test_fit_recovers_the_exponent_of_uncensored_draws_and_of_a_tail() -> None:
    rng = np.random.Generator(np.random.PCG64(24))
    values = draw_power_law(rng, 200_000, 2.7, MAX_CLICK_COUNT)
    assert fit_power_law_exponent(values) == pytest.approx(2.7, rel=0.02)
    # The tail above x_min follows the same law (P(X >= k | X >= m) = (k / m)^(1 - alpha)).
    assert fit_power_law_exponent(values, x_min=3) == pytest.approx(2.7, rel=0.05)


def test_ignoring_the_cut_at_max_session_length_biases_the_fit() -> None:
    """Why the length fit passes x_max: a capped sample is not a power-law sample."""
    rng = np.random.Generator(np.random.PCG64(25))
    lengths = draw_power_law(rng, 200_000, 1.5, 10)
    assert fit_power_law_exponent(lengths, x_max=10) == pytest.approx(1.5, rel=0.02)
    assert fit_power_law_exponent(lengths) > 1.6


def test_fit_of_a_sample_without_tail_is_infinite() -> None:
    assert fit_power_law_exponent(np.ones(10, dtype=np.int64)) == math.inf


@pytest.mark.parametrize(
    ("values", "options", "message"),
    [
        ([], {}, "non-empty"),
        ([1.5, 2.0], {}, "whole numbers"),
        ([1.0, math.inf], {}, "whole numbers"),
        ([1, 2], {"x_min": 0}, "x_min"),
        ([1, 2], {"x_min": 5}, "no value"),
        ([1, 20], {"x_max": 10}, "x_max"),
    ],
)
def test_fit_refuses_malformed_input(values: list[float], options: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_power_law_exponent(np.array(values), **options)
