"""`etude run` as a person uses it: a spec file in, live progress and a summary out, Ctrl-C safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPEC = """
name: cli
models: [{name: noop}]
catalog_sizes: [1000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}}
load: {target_rate_per_s: 20, ramp_duration_s: 1, hold_duration_s: %d}
"""


def _etude_run(spec_path: Path, results: Path, own_group: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "etude.services.cli", "run", str(spec_path), "--results", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell's background jobs ignore SIGINT; a person's terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        # Its own process group (a terminal's foreground job), so a test can signal all of it.
        start_new_session=own_group,
    )


def _children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def test_run_prints_the_summary_and_exits_zero(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC % 1)
    process = _etude_run(spec_path, tmp_path / "results")
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output
    assert "noop-c1000-cpu-eager" in output and "| met |" in output
    (experiment_dir,) = (tmp_path / "results").iterdir()
    assert (experiment_dir / "summary.md").read_text().strip() in output
    assert f"Report: {experiment_dir / 'report.html'}" in output


def test_invalid_spec_exits_two_naming_the_field(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text((SPEC % 1).replace("target_rate_per_s: 20", "target_rate_per_s: -1"))
    process = _etude_run(spec_path, tmp_path / "results")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "load.target_rate_per_s" in output


def test_ctrl_c_stops_every_service_and_records_the_cancellation(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC % 120)
    process = _etude_run(spec_path, tmp_path / "results")
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if "] running" in line or time.monotonic() > deadline:
            break
    _wait_for_records(tmp_path / "results")
    children = _children_of(process.pid)
    assert len(children) == 3  # the workload service, the loadgen and the inference service
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()
    (experiment_dir,) = (tmp_path / "results").iterdir()
    experiment = json.loads((experiment_dir / "experiment.json").read_text())
    assert experiment["state"] == "EXPERIMENT_STATE_CANCELLED"
    assert experiment["trials"][0]["state"] == "TRIAL_STATE_CANCELLED"
    assert (experiment_dir / "trials" / "noop-c1000-cpu-eager" / "records.csv").stat().st_size > 0
    assert os.path.exists(experiment_dir / "summary.md")


def _wait_for_records(results: Path, timeout_s: float = 60.0) -> None:
    """Until the running trial has recorded requests (a loaded machine may take a while to start it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # A header line, then at least one row.
        if any(path.read_bytes().count(b"\n") >= 2 for path in results.glob("*/trials/*/records.csv")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no requests recorded under {results} within {timeout_s:g} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_whole_process_group_keeps_the_loadgen_summary(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C in a terminal signals every process of the job at once, the services included."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC % 120)
    process = _etude_run(spec_path, tmp_path / "results", own_group=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if "] running" in line or time.monotonic() > deadline:
            break
    _wait_for_records(tmp_path / "results")
    children = _children_of(process.pid)
    assert len(children) == 3  # the workload service, the loadgen and the inference service
    os.killpg(process.pid, sig)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()
    (experiment_dir,) = (tmp_path / "results").iterdir()
    experiment = json.loads((experiment_dir / "experiment.json").read_text())
    assert experiment["state"] == "EXPERIMENT_STATE_CANCELLED"
    trial_dir = experiment_dir / "trials" / "noop-c1000-cpu-eager"
    loadgen_log = (experiment_dir / "logs" / "loadgen.log").read_text()
    assert (trial_dir / "summary.json").exists(), f"{output}\nloadgen.log ends:\n{loadgen_log[-3000:]}"
    summary = json.loads((trial_dir / "summary.json").read_text())
    assert int(summary["requests_ok"]) > 0
    assert (trial_dir / "records.csv").stat().st_size > 0


def test_results_that_cannot_be_written_are_exit_2_before_anything_runs(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC % 1)
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("results cannot go under a file")
    process = _etude_run(spec_path, in_the_way / "results")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert "results:" in output and "cannot write results there" in output
    assert "Traceback" not in output and "Experiment" not in output


def test_a_controller_whose_store_cannot_be_written_refuses_to_start(tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "etude.services.cli", "serve", "controller", "--port", "0",
         "--results", str(in_the_way / "results")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "cannot write results there" in done.stderr


def test_search_flags_override_the_specs_search_settings(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC % 1 + "search: {start_rate_per_s: 10, max_rate_per_s: 40, max_probes: 5}\n")
    command = [sys.executable, "-m", "etude.services.cli", "search", str(spec_path)]
    # --max-rate 10 replaces the spec's 40: the first probe passes at the ceiling and ends it.
    command += ["--results", str(tmp_path / "results"), "--max-rate", "10"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    (experiment_dir,) = (tmp_path / "results").iterdir()
    stored = json.loads((experiment_dir / "spec.json").read_text())
    assert stored["search"] == {
        "start_rate_per_s": 10.0,
        "max_rate_per_s": 10.0,
        "precision": 0.05,
        "max_probes": 5,
    }
    (trial_dir,) = (experiment_dir / "trials").iterdir()
    assert [path.name for path in (trial_dir / "probes").iterdir()] == ["01-10"]
    bad = subprocess.run([*command, "--precision", "2"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "search.precision" in bad.stderr
