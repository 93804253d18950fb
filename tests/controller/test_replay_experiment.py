"""Replay of a click log through the controller: the spec names the log, a log that cannot be
replayed is refused before any trial, and an experiment replays the log's sessions in order."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.matrix import expand_trials
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.report.fits import fit_replay, fit_replayed_log
from etude.services.results.store import LocalResultStore
from etude.services.workload.fit import ClickLogColumns, fit_click_log, read_click_log
from etude.services.workload.generator import fit_power_law_exponent
from etude.services.workload.replay import ReplaySource, index_click_log
from etude.services.workload.trial import workload_spec
from gcs_emulator import fake_gcs_server, new_bucket

from etude.spec import SpecError, parse_spec_text
from etude.v1 import controller_pb2

SPEC = """
name: replay
models: [{name: noop}]
catalog_sizes: [%(catalog)d]
workload: {source: replay, path: %(path)s, session_column: session, item_column: item}
load: {target_rate_per_s: 40, ramp_duration_s: 1, hold_duration_s: 3, k: 5}
slo: {percentile: 90, latency_ms: 500}
loadgen_instances: %(instances)d
"""


def write_log(path: Path, sessions: int = 60, seed: int = 1) -> list[list[str]]:
    """A CSV of `sessions` sessions (1-7 clicks over 30 item names), grouped by session; the
    sessions' item names in log order."""
    rng = random.Random(seed)
    clicks = [[f"item-{rng.randrange(30)}" for _ in range(rng.randint(1, 7))] for _ in range(sessions)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "session", "item"])
        for number, items in enumerate(clicks):
            for item in items:
                writer.writerow([number, f"visit-{number}", item])
    return clicks


def spec_text(path: Path | str, catalog: int = 100, instances: int = 1) -> str:
    return SPEC % {"catalog": catalog, "path": path, "instances": instances}


def refusal(text: str) -> SpecError:
    with pytest.raises(SpecError) as raised:
        resolve(parse_spec_text(text))
    return raised.value


def test_a_replay_spec_resolves_to_the_logs_absolute_path_paced_by_the_ramp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_log(tmp_path / "clicks.csv")
    monkeypatch.chdir(tmp_path)
    spec = resolve(parse_spec_text(spec_text(Path("clicks.csv"))))
    assert spec.workload.path == str(tmp_path / "clicks.csv")
    assert spec.workload.pace == "ramp" and spec.workload.max_session_length == 50
    (trial,) = expand_trials(spec)
    workload = workload_spec(trial, spec)
    assert workload.WhichOneof("statistics") == "replay"
    assert workload.replay.path == str(tmp_path / "clicks.csv")
    assert (workload.replay.session_column, workload.replay.item_column) == ("session", "item")
    assert workload.catalog_size == 100


@pytest.mark.parametrize(
    ("case", "field", "reason"),
    [
        ("missing", "workload.path", "No such file"),
        ("a folder", "workload.path", "not a regular file"),
        ("empty", "workload.path", "is empty"),
        ("header only", "workload.path", "holds no clicks"),
        ("wrong column", "workload.item_column", "no column 'item'"),
    ],
)
def test_a_log_that_cannot_be_replayed_is_refused_with_the_reason(
    tmp_path: Path, case: str, field: str, reason: str
) -> None:
    path = tmp_path / "clicks.csv"
    if case == "a folder":
        path.mkdir()
    elif case == "empty":
        path.write_text("")
    elif case == "header only":
        path.write_text("session,item\n")
    elif case == "wrong column":
        path.write_text("session,product\ns1,a\n")
    error = refusal(spec_text(path))
    assert error.field == field
    assert reason in str(error)


def test_a_catalog_below_the_logs_distinct_items_is_refused_naming_n(tmp_path: Path) -> None:
    clicks = write_log(tmp_path / "clicks.csv")
    distinct = len({item for session in clicks for item in session})
    error = refusal(spec_text(tmp_path / "clicks.csv", catalog=distinct - 1))
    assert error.field == "catalog_sizes[0]"
    assert f"below the {distinct} distinct items" in str(error)
    resolve(parse_spec_text(spec_text(tmp_path / "clicks.csv", catalog=distinct)))


@pytest.mark.parametrize(
    ("workload", "field"),
    [
        ("{source: replay}", "workload.path"),
        (
            "{source: replay, path: %(path)s, exponents: {alpha_length: 2, alpha_clicks: 2}}",
            "workload.exponents",
        ),
        ("{source: replay, path: %(path)s, pace: fast}", "workload.pace"),
        ("{source: replay, path: %(path)s, speedup: 2}", "workload.speedup"),
        ("{source: replay, path: %(path)s, pace: log}", "workload.timestamp_column"),
        (
            "{source: replay, path: %(path)s, pace: log, timestamp_column: time, speedup: -1}",
            "workload.speedup",
        ),
        ("{source: replay, path: %(path)s, max_session_length: 1001}", "workload.max_session_length"),
        ("{exponents: {alpha_length: 2, alpha_clicks: 2}, path: %(path)s}", "workload.path"),
        ("{source: recorded, path: %(path)s}", "workload.source"),
    ],
)
def test_replay_fields_out_of_place_are_refused_naming_the_field(
    tmp_path: Path, workload: str, field: str
) -> None:
    path = tmp_path / "clicks.csv"
    write_log(path)
    text = spec_text(path).replace(
        f"{{source: replay, path: {path}, session_column: session, item_column: item}}",
        workload % {"path": path},
    )
    assert refusal(text).field == field


def test_the_report_fits_what_was_replayed_beside_the_whole_logs_exponents(tmp_path: Path) -> None:
    clicks = write_log(tmp_path / "clicks.csv", sessions=200)
    columns = ClickLogColumns(session="session", item="item")
    index = index_click_log(ReplaySource(str(tmp_path / "clicks.csv"), columns))
    try:
        log = fit_replayed_log(index, "clicks.csv")
        assert log.statistics.num_sessions == 200 and log.statistics.num_items == index.num_items
        every_click = np.array(
            [(position + 1, click) for position, items in enumerate(clicks) for click in range(len(items))]
        )
        whole = fit_replay(index, log, every_click, "records.csv")
        # Everything replayed: what was replayed fits exactly as the log does.
        assert [row.fitted for row in whole] == [row.expected for row in whole]
        assert [row.sample_size for row in whole] == [200, index.num_items]
        # The first 20 sessions only: their own exponents, on their own items.
        first = every_click[every_click[:, 0] <= 20]
        part = fit_replay(index, log, first, "records.csv")
        items_seen = {item for items in clicks[:20] for item in items}
        assert [row.sample_size for row in part] == [20, len(items_seen)]
        assert part[0].fitted == fit_power_law_exponent(np.array([len(items) for items in clicks[:20]]))
        # Records that do not belong to this log are not fitted.
        stranger = fit_replay(index, log, np.array([[201, 0]]), "records.csv")
        assert [row.fitted for row in stranger] == [None, None]
    finally:
        index.close()


@pytest.mark.slow
async def test_an_experiment_replays_the_logs_sessions_in_order_from_the_workload_service(
    tmp_path: Path,
) -> None:
    clicks = write_log(tmp_path / "clicks.csv")
    store = LocalResultStore(tmp_path / "results")
    spec = resolve(parse_spec_text(spec_text(tmp_path / "clicks.csv", instances=2)))
    experiment = new_experiment(spec, store)
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    (result,) = experiment.trials
    trial_dir = tmp_path / "results" / experiment.experiment_id / "trials" / result.trial.trial_id
    with (trial_dir / "records.csv").open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == result.summary.requests_sent > 0
    assert all(record["status"] == "OK" for record in records)
    sent: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for record in records:
        # Merged from two load generators: the second's ids are "<log position>#1".
        position, _, suffix = record["session_id"].partition("#")
        session, instance = int(position), int(suffix or 0)
        # Part i of 2 holds the log's sessions i + 1, i + 3, ... (1-based positions).
        assert (session - 1) % 2 == instance
        assert 1 <= session <= len(clicks)
        assert 0 <= int(record["click_index"]) < len(clicks[session - 1])
        sent.setdefault((instance, session), []).append(
            (int(record["actual_send_ns"]), int(record["click_index"]))
        )
    for clicks_sent in sent.values():
        # Each session's clicks in order, one after the other, none skipped.
        assert [index for _, index in sorted(clicks_sent)] == list(range(len(clicks_sent)))
    for instance in (0, 1):
        # Each load generator starts the sessions of its part in log order, from the first.
        first_sends = sorted(
            (min(times)[0], session) for (part, session), times in sent.items() if part == instance
        )
        started = [session for _, session in first_sends]
        assert started == sorted(started) and started[0] == instance + 1
    log = (tmp_path / "results" / experiment.experiment_id / "logs" / "workload.log").read_text()
    assert str(tmp_path / "clicks.csv") in log
    # The report fits the log and shows its exponents beside what was replayed.
    report = (tmp_path / "results" / experiment.experiment_id / "report.md").read_text()
    statistics = fit_click_log(*read_click_log(tmp_path / "clicks.csv", "session", "item"))
    assert f"alpha_length {statistics.alpha_length:.4f}" in report
    assert f"the log {tmp_path / 'clicks.csv'}" in report
    assert "every session whole (the models read its last 50 clicks)" in report


@pytest.mark.slow
async def test_an_experiment_paced_by_the_log_sends_each_click_at_its_time_over_the_speedup(
    tmp_path: Path,
) -> None:
    # Session n (0-based) clicks at second n of the log: at speedup 20, 50 ms apart.
    clicks = write_log(tmp_path / "clicks.csv", sessions=40)
    text = spec_text(tmp_path / "clicks.csv").replace(
        "item_column: item}", "item_column: item, timestamp_column: time, pace: log, speedup: 20}"
    )
    store = LocalResultStore(tmp_path / "results")
    experiment = new_experiment(resolve(parse_spec_text(text)), store)
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    (result,) = experiment.trials
    trial_dir = tmp_path / "results" / experiment.experiment_id / "trials" / result.trial.trial_id
    with (trial_dir / "records.csv").open(newline="") as handle:
        records = list(csv.DictReader(handle))
    # The whole log (40 s of it) fits in the run (4 s) at speedup 20: every click was sent.
    assert len(records) == sum(len(session) for session in clicks) == result.summary.requests_sent
    start_ns = min(int(record["intended_send_ns"]) for record in records)
    for record in records:
        session = int(record["session_id"])
        assert int(record["intended_send_ns"]) - start_ns == pytest.approx((session - 1) * 50e6, abs=1)
        assert 0 <= int(record["click_index"]) < len(clicks[session - 1])


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with fake_gcs_server() as url:
        yield url


def test_a_log_in_cloud_storage_is_checked_when_the_spec_is_accepted(emulator: str, tmp_path: Path) -> None:
    from google.cloud import storage

    clicks = write_log(tmp_path / "clicks.csv")
    distinct = len({item for session in clicks for item in session})
    bucket = new_bucket()
    storage.Client(project=None).bucket(bucket).blob("clicks.csv").upload_from_filename(
        str(tmp_path / "clicks.csv")
    )
    uri = f"gs://{bucket}/clicks.csv"
    spec = resolve(parse_spec_text(spec_text(uri, catalog=distinct) + "target: kubernetes\n"))
    assert spec.workload.path == uri
    error = refusal(spec_text(uri, catalog=distinct - 1))
    assert error.field == "catalog_sizes[0]" and f"{distinct} distinct items" in str(error)
    missing = refusal(spec_text(f"gs://{bucket}/absent.csv"))
    assert missing.field == "workload.path" and "does not exist" in str(missing)
    # The cluster's workload pod cannot read this machine's disk.
    local = refusal(spec_text(tmp_path / "clicks.csv") + "target: kubernetes\n")
    assert local.field == "workload.path" and "gs://bucket/object" in str(local)


@pytest.mark.slow
def test_etude_run_refuses_a_bad_log_before_any_trial_with_exit_two(tmp_path: Path) -> None:
    (tmp_path / "clicks.csv").write_text("session,product\ns1,a\n")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(spec_text(tmp_path / "clicks.csv"))
    results = tmp_path / "results"
    finished = subprocess.run(
        [sys.executable, "-m", "etude.services.cli", "run", str(spec_path), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "workload.item_column" in finished.stderr and "no column 'item'" in finished.stderr
    # Nothing ran: no experiment was created.
    assert not results.exists() or not any(results.iterdir())
