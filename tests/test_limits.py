"""Every number a person or caller hands to Etude has a bound and must be finite; what is beyond
is refused with the field's path and the range, before anything runs."""

from __future__ import annotations

import math

import pytest

from etude.limits import (
    LOAD_SPEC_LIMITS,
    MAX_TRIALS,
    SPEC_LIMITS,
    WORKLOAD_SPEC_LIMITS,
    LimitExceeded,
    check_limits,
    trial_count,
)
from etude.v1 import experiment_pb2, loadgen_pb2, workload_pb2


def _spec() -> experiment_pb2.ExperimentSpec:
    spec = experiment_pb2.ExperimentSpec(name="limits", catalog_sizes=[10_000], runtimes=["jit"])
    spec.models.add(name="gru4rec")
    spec.workload.exponents.alpha_length = 2.2
    spec.workload.exponents.alpha_clicks = 1.8
    spec.hardware.add(name="local-cpu", device="cpu", monthly_cost_usd=108)
    spec.batching.max_batch_delay_ms = 2
    spec.load.target_rate_per_s = 200
    spec.load.ramp_duration_s = 20
    spec.load.hold_duration_s = 10
    spec.slo.latency_ms = 50
    return spec


def test_a_reasonable_spec_is_within_every_limit() -> None:
    check_limits(_spec(), SPEC_LIMITS)


def _refused(spec: experiment_pb2.ExperimentSpec) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as refused:
        check_limits(spec, SPEC_LIMITS)
    return refused.value


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda s: s.catalog_sizes.append(10**12), "catalog_sizes[1]", "[1, 100,000,000]"),
        (lambda s: setattr(s.load, "target_rate_per_s", 1e9), "load.target_rate_per_s", "1,000,000"),
        (lambda s: setattr(s.load, "hold_duration_s", 2**31 - 1), "load.hold_duration_s", "86,400"),
        (lambda s: setattr(s.models[0], "embedding_dim", 2**30), "models[0].embedding_dim", "4,096"),
        (
            lambda s: setattr(s.workload.exponents, "alpha_clicks", math.inf),
            "workload.exponents.alpha_clicks",
            "finite",
        ),
        (
            lambda s: setattr(s.batching, "max_batch_delay_ms", math.inf),
            "batching.max_batch_delay_ms",
            "finite",
        ),
        (lambda s: setattr(s.slo, "latency_ms", math.nan), "slo.latency_ms", "finite"),
        (lambda s: setattr(s, "repetitions", 100_000), "repetitions", "[1, 100]"),
        (lambda s: setattr(s.hardware[0], "monthly_cost_usd", -1), "hardware[0].monthly_cost_usd", "[0,"),
    ],
)
def test_absurd_values_are_refused_naming_the_field_and_its_range(change, field: str, words: str) -> None:
    spec = _spec()
    change(spec)
    refused = _refused(spec)
    assert refused.field == field
    assert words in str(refused)


def test_zero_keeps_meaning_the_default() -> None:
    spec = _spec()
    spec.repetitions = 0
    spec.load.k = 0
    check_limits(spec, SPEC_LIMITS)


def test_a_repeated_number_field_has_a_length_bound() -> None:
    spec = _spec()
    spec.catalog_sizes.extend(range(1, 100))
    assert _refused(spec).field == "catalog_sizes"


def test_the_matrix_size_is_the_product_of_its_axes_with_empty_axes_counting_one() -> None:
    assert trial_count(10, 5, 2, 2, 100) == 20_000 > MAX_TRIALS
    assert trial_count(2, 1, 0, 1, 0) == 2


def test_the_load_generator_refuses_a_run_a_day_longer_than_a_day() -> None:
    spec = loadgen_pb2.LoadSpec(target="127.0.0.1:1")
    spec.profile.target_rate_per_s = 100
    spec.profile.hold_duration_s = 2**31 - 1
    with pytest.raises(LimitExceeded) as refused:
        check_limits(spec, LOAD_SPEC_LIMITS)
    assert refused.value.field == "profile.hold_duration_s"


def test_the_workload_service_refuses_a_catalog_of_a_trillion_items() -> None:
    spec = workload_pb2.WorkloadSpec(catalog_size=10**12)
    with pytest.raises(LimitExceeded) as refused:
        check_limits(spec, WORKLOAD_SPEC_LIMITS)
    assert refused.value.field == "catalog_size" and "100,000,000" in refused.value.reason
