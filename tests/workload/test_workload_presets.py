"""The scipy.stats.powerlaw parameterisation and the presets fitted on real logs (bolcom, rsc15)."""

from __future__ import annotations

import numpy as np
import pytest
from etude.services.workload.generator import (
    PRESETS,
    InvalidWorkloadSpec,
    ScipyPowerLaw,
    SessionGenerator,
    SyntheticWorkload,
    _rng,
)

from etude.v1 import workload_pb2


@pytest.mark.parametrize("law", [ScipyPowerLaw(0.07004, 2, 277), ScipyPowerLaw(0.5, 1, 40)])
def test_draws_follow_the_scipy_powerlaw_cdf(law: ScipyPowerLaw) -> None:
    cap = 10_000
    draws = law.draw(_rng(5, 0), 200_000, cap)
    assert draws.min() >= max(1, int(law.loc)) and draws.max() <= int(law.loc + law.scale)
    for k in (2, 5, 20, 100):
        # floor(X) <= k  <=>  X < k + 1, and P(X < x) = ((x - loc) / scale)^a on the support.
        expected = min(1.0, max(0.0, (k + 1 - law.loc) / law.scale)) ** law.a
        assert np.mean(draws <= k) == pytest.approx(expected, abs=0.01)


def test_a_draw_above_the_cap_becomes_the_cap() -> None:
    draws = ScipyPowerLaw(2.0, 1, 500).draw(_rng(1, 0), 10_000, cap=50)
    assert draws.max() == 50
    assert np.mean(draws == 50) > 0.9  # a = 2 puts most mass near loc + scale


def test_bolcom_preset_generates_sessions_from_its_fits() -> None:
    lengths, clicks = PRESETS["bolcom"]
    workload = SyntheticWorkload(catalog_size=5_000, seed=3, length_fit=lengths, clicks_fit=clicks)
    batch = SessionGenerator(workload).next_batch(2_000)
    assert batch.lengths.min() >= 2  # loc = 2: no session is shorter
    assert batch.lengths.max() <= workload.max_session_length
    assert 1 <= batch.item_ids.min() and batch.item_ids.max() <= 5_000
    assert "scipy.stats.powerlaw" in workload.describe()


def test_proto_with_fits_builds_the_same_workload() -> None:
    spec = workload_pb2.WorkloadSpec(catalog_size=100, seed=9)
    spec.powerlaw_fits.session_lengths.a, spec.powerlaw_fits.session_lengths.loc = 0.1, 1
    spec.powerlaw_fits.session_lengths.scale = 199
    spec.powerlaw_fits.click_counts.a, spec.powerlaw_fits.click_counts.loc = 0.08, 1
    spec.powerlaw_fits.click_counts.scale = 1000
    workload = SyntheticWorkload.from_proto(spec)
    assert workload.length_fit == ScipyPowerLaw(0.1, 1, 199)
    assert workload.alpha_length is None and workload.alpha_clicks is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (
            {"alpha_length": 2.0, "length_fit": ScipyPowerLaw(0.1, 1, 10), "alpha_clicks": 2.0},
            "exponents.alpha_length",
        ),
        ({"alpha_clicks": 2.0}, "exponents.alpha_length"),
        ({"alpha_length": 2.0, "clicks_fit": ScipyPowerLaw(0.0, 1, 10)}, "powerlaw_fits.click_counts.a"),
        ({"alpha_length": 2.0, "clicks_fit": ScipyPowerLaw(0.1, 1, -3)}, "powerlaw_fits.click_counts.scale"),
        ({"alpha_length": 2.0, "clicks_fit": ScipyPowerLaw(0.1, -5, 2)}, "powerlaw_fits.click_counts.loc"),
    ],
)
def test_each_quantity_needs_exactly_one_valid_parameterisation(fields: dict, field: str) -> None:
    with pytest.raises(InvalidWorkloadSpec) as error:
        SyntheticWorkload(catalog_size=10, **fields)
    assert error.value.field == field
