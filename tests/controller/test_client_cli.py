"""The platform's command-line client against a real controller on a loopback port: submit, wait,
watch, get, list, cancel, validate, the exit codes a CI job gates on, and the bearer token."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import yaml

TINY = {
    "name": "client",
    "models": [{"name": "noop"}],
    "catalog_sizes": [100],
    "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
    "runtimes": ["eager"],
    "load": {"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": 1},
}


def _spec_file(folder: Path, **changes: object) -> Path:
    path = folder / f"spec-{len(list(folder.glob('spec-*')))}.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


async def etude(*args: str, timeout_s: float = 120) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "etude.services.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    return process.returncode or 0, out.decode(), err.decode()


async def test_submit_wait_list_get_and_watch_follow_one_experiment(child_service, tmp_path: Path) -> None:
    async with child_service("controller", ["--results", str(tmp_path / "results")]) as endpoint:
        code, out, err = await etude("submit", str(_spec_file(tmp_path)), "--wait", "--controller", endpoint)
        assert code == 0, err
        experiment_id = out.splitlines()[0]
        assert experiment_id.startswith("client-")
        assert f"Experiment {experiment_id}: succeeded" in out
        assert "noop-c100-cpu-eager" in out

        code, listing, err = await etude("list", "--controller", endpoint)
        assert code == 0, err
        assert any(line.startswith(experiment_id) and "succeeded" in line for line in listing.splitlines())

        code, table, err = await etude("get", experiment_id, "--controller", endpoint)
        assert code == 0 and "| noop-c100-cpu-eager" in table, err

        # Watching a finished experiment ends at once, with its table and exit status.
        code, watched, err = await etude("watch", experiment_id, "--controller", endpoint)
        assert code == 0 and f"Experiment {experiment_id}: succeeded" in watched, err

        code, _, err = await etude("get", "no-such-experiment", "--controller", endpoint)
        assert code == 2 and "NOT_FOUND" in err and "no-such-experiment" in err


async def test_a_missed_slo_exits_3_only_when_asked(child_service, tmp_path: Path) -> None:
    unreachable = _spec_file(tmp_path, slo={"latency_ms": 0.001})
    async with child_service("controller", ["--results", str(tmp_path / "results")]) as endpoint:
        code, out, err = await etude(
            "submit", str(unreachable), "--wait", "--fail-on-slo-miss", "--controller", endpoint
        )
        assert code == 3, (out, err)
        assert "MISSED" in out
        experiment_id = out.splitlines()[0]
        code, _, err = await etude("watch", experiment_id, "--controller", endpoint)
        assert code == 0, err


async def test_cancel_stops_a_queued_or_running_experiment(child_service, tmp_path: Path) -> None:
    long = _spec_file(tmp_path, load={"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": 600})
    async with child_service("controller", ["--results", str(tmp_path / "results")]) as endpoint:
        code, out, err = await etude("submit", str(long), "--controller", endpoint)
        assert code == 0, err
        experiment_id = out.strip()
        code, out, err = await etude("cancel", experiment_id, "--controller", endpoint)
        assert code == 0 and out.strip() == f"{experiment_id}: cancelled", (out, err)
        code, out, _ = await etude("watch", experiment_id, "--controller", endpoint)
        assert code == 1 and "cancelled" in out


async def test_a_token_protected_controller_refuses_a_client_without_it(
    child_service, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    flags = ["--results", str(tmp_path / "results"), "--auth-token-file", str(token)]
    async with child_service("controller", flags) as endpoint:
        code, _, err = await etude("list", "--controller", endpoint)
        assert code == 2 and "refused the credentials" in err
        code, _, err = await etude("list", "--controller", endpoint, "--auth-token-file", str(token))
        assert code == 0, err


async def test_an_unreachable_controller_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, _, err = await etude("list", "--controller", "127.0.0.1:1", timeout_s=60)
    assert code == 2 and "not reachable" in err and "Traceback" not in err


async def test_validate_prints_the_matrix_and_the_duration_or_names_the_bad_field(tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, models=[{"name": "noop"}, {"name": "gru4rec"}], catalog_sizes=[100, 1000])
    code, out, err = await etude("validate", str(spec))
    assert code == 0, err
    assert "4 trial(s)" in out and "gru4rec-c1000-cpu-eager" in out
    assert "4 x (1 s ramp + 1 s hold) = 0 min 8 s" in out
    bad = _spec_file(tmp_path, load={"target_rate_per_s": -1, "hold_duration_s": 1})
    code, _, err = await etude("validate", str(bad))
    assert code == 2 and "load.target_rate_per_s" in err


async def test_validate_with_a_controller_asks_it_and_creates_nothing(child_service, tmp_path: Path) -> None:
    results = tmp_path / "results"
    spec = _spec_file(tmp_path, models=[{"name": "noop"}, {"name": "gru4rec"}])
    async with child_service("controller", ["--results", str(results)]) as endpoint:
        code, out, err = await etude("validate", str(spec), "--controller", endpoint)
        assert code == 0, err
        assert f"(controller {endpoint}): valid; 2 trial(s)" in out
        # The controller's result store, not the spec's default: what it would really use.
        assert f"results in {results}" in out
        assert "gru4rec-c100-cpu-eager" in out and "2 x (1 s ramp + 1 s hold) = 0 min 4 s" in out

        bad = _spec_file(tmp_path, slo={"percentile": 100})
        code, _, err = await etude("validate", str(bad), "--controller", endpoint)
        assert code == 2 and "INVALID_ARGUMENT" in err and "spec.slo.percentile" in err, err

        code, listing, err = await etude("list", "--controller", endpoint)
        assert code == 0 and len(listing.strip().splitlines()) == 1, (listing, err)
    assert not [path for path in results.iterdir() if path.is_dir()]
