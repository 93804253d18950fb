"""`etude compare`: two experiments side by side per trial id, with B/A ratios and the unmatched listed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from etude.services.controller.cli import compare_command
from etude.services.report.compare import compare_experiments, comparison_markdown
from google.protobuf import json_format

from etude.v1 import controller_pb2, experiment_pb2, loadgen_pb2


def _experiment(
    experiment_id: str, trials: dict[str, tuple[float, float, int, bool]]
) -> controller_pb2.Experiment:
    """trials: id -> (ok/s hold, p90 ms, errors, SLO met)."""
    experiment = controller_pb2.Experiment(experiment_id=experiment_id)
    for trial_id, (rate, p90_ms, errors, met) in trials.items():
        experiment.trials.add(
            trial=experiment_pb2.Trial(trial_id=trial_id),
            state=experiment_pb2.TRIAL_STATE_SUCCEEDED,
            summary=loadgen_pb2.LoadSummary(
                achieved_rate_per_s=rate / 2,
                achieved_hold_rate_per_s=rate,
                requests_failed=errors,
                latency_from_intended=loadgen_pb2.LatencyPercentiles(
                    p50_ms=p90_ms / 2, p90_ms=p90_ms, p99_ms=p90_ms
                ),
            ),
            slo_met=met,
        )
    return experiment


A = _experiment(
    "run-a", {"noop-c1000-cpu-jit": (200, 4.0, 0, True), "gru4rec-c1000-cpu-jit": (100, 40, 2, True)}
)
B = _experiment(
    "run-b", {"noop-c1000-cpu-jit": (200, 8.0, 0, True), "sasrec-c1000-cpu-jit": (50, 9, 0, False)}
)


def test_matching_trials_get_b_over_a_ratios_and_the_rest_are_listed() -> None:
    comparison = compare_experiments(A, B)
    (trial,) = comparison.trials
    metrics = {pair.metric: pair for pair in trial.metrics}
    assert metrics["p90 ms"].ratio == 2.0 and metrics["ok/s hold"].ratio == 1.0
    assert metrics["errors"].ratio is None  # 0 / 0: no ratio rather than a misleading one
    assert comparison.only_in_a == ["gru4rec-c1000-cpu-jit"] and comparison.only_in_b == [
        "sasrec-c1000-cpu-jit"
    ]

    table = comparison_markdown(comparison)
    p90_row = next(line for line in table.splitlines() if "| p90 ms" in line)
    assert [cell.strip() for cell in p90_row.strip("|").split("|")] == [
        "noop-c1000-cpu-jit", "p90 ms", "4.00", "8.00", "2.00x",
    ]  # fmt: skip
    assert "Only in A: gru4rec-c1000-cpu-jit" in table and "Only in B: sasrec-c1000-cpu-jit" in table


def test_compare_command_reads_experiment_folders_and_writes_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for experiment in (A, B):
        folder = tmp_path / experiment.experiment_id
        folder.mkdir()
        (folder / "experiment.json").write_text(
            json_format.MessageToJson(experiment, preserving_proto_field_name=True)
        )
    output = tmp_path / "compare.md"
    arguments = argparse.Namespace(
        results_a=str(tmp_path / "run-a"), results_b=str(tmp_path / "run-b"), output=str(output)
    )
    assert compare_command(arguments) == 0
    printed = capsys.readouterr().out
    assert "A: run-a" in printed and "2.00x" in printed
    assert output.read_text() in printed

    arguments.results_b = str(tmp_path / "nowhere")
    assert compare_command(arguments) == 2


def test_compare_warns_when_the_two_runs_differ_in_their_environment() -> None:
    from etude.provenance import current_environment

    a, b = controller_pb2.Experiment(), controller_pb2.Experiment()
    a.CopyFrom(A)
    b.CopyFrom(B)
    a.environment.CopyFrom(current_environment())
    b.environment.CopyFrom(current_environment())
    assert "WARNING" not in comparison_markdown(compare_experiments(a, b))
    b.environment.torch_version, b.environment.gpu_name = "2.11.0", "NVIDIA H100"
    table = comparison_markdown(compare_experiments(a, b))
    assert table.startswith("WARNING: A and B ran in different environments")
    assert f"torch_version: {a.environment.torch_version} vs 2.11.0" in table
    assert "gpu_name: - vs NVIDIA H100" in table


def test_compare_warns_when_the_inference_services_ran_in_different_environments() -> None:
    from etude.provenance import current_environment

    a, b = controller_pb2.Experiment(), controller_pb2.Experiment()
    a.CopyFrom(A)
    b.CopyFrom(B)
    for experiment in (a, b):
        experiment.environment.CopyFrom(current_environment())
        for result in experiment.trials:
            result.inference_environment.CopyFrom(current_environment())
    assert "WARNING" not in comparison_markdown(compare_experiments(a, b))
    # The controllers alike, the pods serving B on another GPU: every paired trial says it once.
    for result in b.trials:
        result.inference_environment.gpu_name = "NVIDIA A100"
    table = comparison_markdown(compare_experiments(a, b))
    assert table.startswith("WARNING: A and B ran in different environments")
    assert table.count("inference service: gpu_name: - vs NVIDIA A100") == 1
