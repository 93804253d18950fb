"""Experiment specs: YAML parses into ExperimentSpec, and every mistake names its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from etude.services.controller.validation import load_spec, resolve

from etude.spec import SpecError, parse_spec_text

ROOT = Path(__file__).resolve().parents[2]

VALID = """
name: tiny
models: [{name: noop}, {name: gru4rec, embedding_dim: 16}]
catalog_sizes: [1000, 5000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 7}
load: {target_rate_per_s: 50, ramp_duration_s: 2, hold_duration_s: 1}
"""


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_example_is_a_valid_spec(example: Path) -> None:
    spec = load_spec(example)
    assert spec.models and spec.catalog_sizes and spec.slo.rate_per_s > 0


def test_quickstart_example_is_valid() -> None:
    spec = load_spec(ROOT / "examples" / "quickstart.yaml")
    assert [model.name for model in spec.models] == ["noop", "gru4rec"]
    assert list(spec.catalog_sizes) == [10000]


def test_defaults_are_written_out() -> None:
    spec = resolve(parse_spec_text(VALID))
    assert spec.embedding_policy == "fourth_root"
    assert [(h.name, h.device, h.replicas) for h in spec.hardware] == [("cpu", "cpu", 1)]
    assert list(spec.runtimes) == ["eager"]
    assert spec.batching.max_batch_size == 1024
    assert spec.batching.max_batch_delay_ms == 2.0
    assert spec.batching.max_queue_size == 4096
    assert spec.load.k == 21 and spec.load.request_timeout_ms == 1000
    assert (spec.slo.percentile, spec.slo.latency_ms, spec.slo.rate_per_s) == (90, 50, 50)
    assert spec.repetitions == 1 and spec.target == "local" and spec.results == "results"


def test_search_settings_are_written_out_and_absent_without_a_search() -> None:
    assert not resolve(parse_spec_text(VALID)).HasField("search")
    search = resolve(parse_spec_text(VALID + "search: {}\n")).search
    assert (search.start_rate_per_s, search.max_rate_per_s) == (50, 64 * 50)
    assert (search.precision, search.max_probes) == (0.05, 10)
    given = resolve(parse_spec_text(VALID + "search: {start_rate_per_s: 20, max_rate_per_s: 40}\n")).search
    assert (given.start_rate_per_s, given.max_rate_per_s) == (20, 40)


def test_zero_batch_delay_is_kept_rather_than_defaulted() -> None:
    spec = resolve(parse_spec_text(VALID + "batching: {max_batch_delay_ms: 0}\n"))
    assert spec.batching.HasField("max_batch_delay_ms")
    assert spec.batching.max_batch_delay_ms == 0


def test_preset_is_resolved_into_its_fits_and_keeps_its_name() -> None:
    text = VALID.replace("{exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 7}", "{preset: rsc15}")
    spec = resolve(parse_spec_text(text))
    assert spec.workload.preset == "rsc15"
    fits = spec.workload.powerlaw_fits
    assert (fits.session_lengths.a, fits.session_lengths.loc, fits.session_lengths.scale) == (0.10325, 1, 199)
    assert (fits.click_counts.a, fits.click_counts.loc, fits.click_counts.scale) == (0.07981, 1, 147418)


@pytest.mark.parametrize(
    ("workload", "field"),
    [
        ("{preset: amazon}", "workload.preset"),
        ("{preset: rsc15, exponents: {alpha_length: 2, alpha_clicks: 2}}", "workload"),
        ("{seed: 1}", "workload"),
        (
            "{powerlaw_fits: {session_lengths: {a: 0.1, loc: 1, scale: 9},"
            " click_counts: {a: -1, loc: 1, scale: 9}}}",
            "workload.powerlaw_fits.click_counts.a",
        ),
    ],
)
def test_workload_statistics_errors_name_the_field(workload: str, field: str) -> None:
    text = VALID.replace("{exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 7}", workload)
    with pytest.raises(SpecError) as error:
        resolve(parse_spec_text(text))
    assert error.value.field == field


def _with(change: dict) -> str:
    document = yaml.safe_load(VALID)
    for path, value in change.items():
        node = document
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return yaml.safe_dump(document)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"models": []}, "models"),
        ({"models": [{"name": "nope"}]}, "models[0].name"),
        ({"models": [{"name": "noop", "embedding_dim": -1}]}, "models[0].embedding_dim"),
        ({"catalog_sizes": []}, "catalog_sizes"),
        ({"catalog_sizes": [100, 0]}, "catalog_sizes[1]"),
        ({"embedding_policy": "sqrt"}, "embedding_policy"),
        ({"workload.source": "kafka"}, "workload.source"),
        ({"workload.exponents.alpha_length": 1.0}, "workload.exponents.alpha_length"),
        ({"workload.exponents.alpha_clicks": 0.5}, "workload.exponents.alpha_clicks"),
        ({"hardware": [{"name": "x", "device": "tpu"}]}, "hardware[0].device"),
        (
            {"hardware": [{"name": "x", "device": "cpu", "monthly_cost_usd": -1}]},
            "hardware[0].monthly_cost_usd",
        ),
        ({"hardware": [{"name": "x", "device": "cpu", "replicas": 2}]}, "hardware[0].replicas"),
        ({"runtimes": ["eager", "onnx"]}, "runtimes[1]"),
        ({"batching.max_batch_size": -1}, "batching.max_batch_size"),
        ({"batching.max_batch_delay_ms": -0.5}, "batching.max_batch_delay_ms"),
        ({"load.target_rate_per_s": 0}, "load.target_rate_per_s"),
        ({"load.ramp_duration_s": -1}, "load.ramp_duration_s"),
        ({"load.ramp_duration_s": 0, "load.hold_duration_s": 0}, "load.hold_duration_s"),
        ({"load.k": 2000}, "load.k"),
        ({"load.candidates_per_request": 1001}, "load.candidates_per_request"),
        ({"load.candidates_per_request": -1}, "load.candidates_per_request"),
        (
            {"models": [{"name": "gru4rec"}, {"name": "repeatnet"}], "load.candidates_per_request": 10},
            "load.candidates_per_request",
        ),
        ({"slo.percentile": 100}, "slo.percentile"),
        ({"repetitions": -2}, "repetitions"),
        ({"target": "mars"}, "target"),
        ({"search.precision": 0.7}, "search.precision"),
        ({"search.precision": -0.1}, "search.precision"),
        ({"search.max_probes": 1000}, "search.max_probes"),
        ({"search.max_probes": -1}, "search.max_probes"),
        ({"search.start_rate_per_s": "NaN"}, "search.start_rate_per_s"),
        ({"search.start_rate_per_s": 2e6}, "search.start_rate_per_s"),
        ({"search.start_rate_per_s": 100, "search.max_rate_per_s": 50}, "search.max_rate_per_s"),
        # The first rate probed is the SLO's (50/s) when no start is given.
        ({"search.max_rate_per_s": 20}, "search.max_rate_per_s"),
    ],
)
def test_invalid_field_is_named(change: dict, field: str) -> None:
    with pytest.raises(SpecError) as error:
        resolve(parse_spec_text(_with(change)))
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\nmodles: []\n", "modles"),
        ("name: x\nload: {rate: 5}\n", "load.rate"),
        ("name: x\ncatalog_sizes: [ten]\n", "catalog_sizes"),
        ("name: x\nload: {ramp_duration_s: fast}\n", "load.ramp_duration_s"),
    ],
)
def test_unknown_or_mistyped_field_is_rejected_with_its_path(text: str, field: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec_text(text)
    assert field in str(error.value)


def test_non_mapping_document_is_rejected() -> None:
    with pytest.raises(SpecError, match="mapping"):
        parse_spec_text("- just\n- a list\n")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "absent.yaml")


def test_a_catalog_whose_tables_exceed_this_machines_memory_is_refused_with_the_estimate() -> None:
    from etude.services.controller.validation import resolve

    spec = parse_spec_text(
        "name: big\nmodels: [{name: gru4rec}]\ncatalog_sizes: [90000000]\n"
        "workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}}\n"
        "load: {target_rate_per_s: 10, hold_duration_s: 1}\n"
        "embedding_policy: fourth_root_pow2\nmodels: [{name: gru4rec, embedding_dim: 1024}]\n",
        "big.yaml",
    )
    with pytest.raises(SpecError) as refused:
        resolve(spec)
    assert refused.value.field == "catalog_sizes[0]"
    assert "GiB for its item tables; this machine has" in str(refused.value)
    spec.target = "kubernetes"  # the cluster's nodes hold it: not weighed against this machine
    resolve(spec)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("catalog_sizes: [1000000000000]", "catalog_sizes[0]"),
        ("load: {target_rate_per_s: 1e9, hold_duration_s: 1}", "load.target_rate_per_s"),
        ("load: {target_rate_per_s: 10, hold_duration_s: 2147483647}", "load.hold_duration_s"),
        ("slo: {latency_ms: .nan}", "slo.latency_ms"),
        ('batching: {max_batch_delay_ms: "Infinity"}', "batching.max_batch_delay_ms"),
        ("repetitions: 100000", "repetitions"),
        (
            "load: {target_rate_per_s: 10, hold_duration_s: 1, candidates_per_request: 20000}",
            "load.candidates_per_request",
        ),
    ],
)
def test_absurd_numbers_are_refused_before_anything_runs(line: str, field: str) -> None:
    from etude.services.controller.validation import resolve

    base = {
        "name": "name: absurd",
        "models": "models: [{name: noop}]",
        "catalog_sizes": "catalog_sizes: [1000]",
        "workload": "workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}}",
        "load": "load: {target_rate_per_s: 10, hold_duration_s: 1}",
    }
    base[line.split(":")[0]] = line
    with pytest.raises(SpecError) as refused:
        resolve(parse_spec_text("\n".join(base.values()) + "\n", "absurd.yaml"))
    assert refused.value.field == field, str(refused.value)


@pytest.mark.parametrize(
    ("rate", "transport", "instances"),
    [(200, "", 1), (4000, "", 1), (6000, "", 2), (2000, "unary", 2), (4000, "stream", 2)],
)
def test_zero_load_generators_means_enough_to_keep_each_within_its_core_budget(
    rate: int, transport: str, instances: int
) -> None:
    from etude.services.controller.validation import resolve

    spec = parse_spec_text(
        "name: auto\nmodels: [{name: noop}]\ncatalog_sizes: [1000]\n"
        "workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}}\n"
        f"load: {{target_rate_per_s: {rate}, hold_duration_s: 1}}\n"
        + (f"loadgen_transport: {transport}\n" if transport else ""),
        "auto.yaml",
    )
    assert resolve(spec).loadgen_instances == instances


def test_on_kubernetes_every_hardware_option_must_name_an_overlay_before_any_trial() -> None:
    from etude.services.controller.validation import resolve

    text = (
        "name: k8s\nmodels: [{name: noop}]\ncatalog_sizes: [1000]\ntarget: kubernetes\n"
        "workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}}\n"
        "load: {target_rate_per_s: 10, hold_duration_s: 1}\n"
        "hardware: [{name: cpu, device: cpu}, {name: big-gpu, device: cuda}]\n"
    )
    with pytest.raises(SpecError) as refused:
        resolve(parse_spec_text(text, "k8s.yaml"))
    assert refused.value.field == "hardware[1].name" and "gpu-t4" in str(refused.value)
    resolve(parse_spec_text(text.replace("big-gpu", "gpu-t4-spot"), "k8s.yaml"))
