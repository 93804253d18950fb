"""Every path of an experiment in a result store comes from one Layout."""

from __future__ import annotations

from etude.services.results.layout import (
    Layout,
    instance_folder,
    loadgen_trace_file,
    probe_folder,
    service_log_file,
)


def test_the_layout_names_every_path_of_an_experiment() -> None:
    layout = Layout("exp-1")
    assert layout.root == "exp-1"
    assert layout.experiment_file == "exp-1/experiment.json"
    assert layout.spec_file == "exp-1/spec.json"
    assert layout.summary_table == "exp-1/summary.md"
    assert (layout.report_markdown, layout.report_html) == ("exp-1/report.md", "exp-1/report.html")
    assert layout.logs == "exp-1/logs"
    assert layout.loadgen_traces() == "exp-1/logs/traces-loadgen.jsonl"
    assert layout.loadgen_traces(2) == "exp-1/logs/traces-loadgen-2.jsonl"
    assert layout.trial("t1") == "exp-1/trials/t1"
    assert layout.trial_file("t1") == "exp-1/trials/t1/trial.json"
    assert layout.inference_traces("t1") == "exp-1/trials/t1/traces-inference.jsonl"
    assert layout.run("t1") == "exp-1/trials/t1"
    assert layout.probe("t1", 3, 250.0) == "exp-1/trials/t1/probes/03-250"
    assert layout.run("t1", probe_folder(3, 250.0)) == layout.probe("t1", 3, 250.0)


def test_instance_0_keeps_the_names_of_the_only_load_generator() -> None:
    assert service_log_file("loadgen") == service_log_file("loadgen", 0) == "loadgen.log"
    assert service_log_file("loadgen", 1) == "loadgen-1.log"
    assert (
        loadgen_trace_file(0) == "traces-loadgen.jsonl" and loadgen_trace_file(1) == "traces-loadgen-1.jsonl"
    )
    assert instance_folder(0) == "loadgen-0"
    assert probe_folder(1, 12.5) == "probes/01-12.5"
