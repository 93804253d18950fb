"""Merging the files of several load generators: synthetic runs whose every answer is known."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from etude.services.controller.merge import MergeError, ProgressMerger, merge_runs
from etude.services.loadgen.stats import LatencyHistogram
from etude.services.results.records import RECORD_FIELDS
from etude.services.results.series import SERIES_FIELDS

from etude.v1 import loadgen_pb2

WALL_NS = 1_700_000_000_000_000_000


@dataclass
class Answer:
    latency_us: int
    status: str = "OK"
    batch_size: int = 4
    server_total_us: int = 0


@dataclass
class SyntheticRun:
    """One instance's run: per tick the answers completed in it, plus answers of the drain."""

    perf_counter_ns: int
    ticks: list[list[Answer]]
    drain: list[Answer] = field(default_factory=list)
    not_sent_per_tick: int = 1

    def write(self, folder: Path, session_prefix: str = "") -> loadgen_pb2.LoadSummary:
        folder.mkdir(parents=True)
        run_info = {
            "run_id": folder.name,
            "perf_counter_ns": self.perf_counter_ns,
            "wall_clock_epoch_ns": WALL_NS,
        }
        (folder / "run.json").write_text(json.dumps(run_info))
        records, series = [], []
        ok = failed = 0
        for tick, answers in [*enumerate(self.ticks), (len(self.ticks) - 1, self.drain)]:
            for index, answer in enumerate(answers):
                intended = self.perf_counter_ns + tick * 1_000_000_000 + index * 1000
                actual = intended + 50_000
                completion = intended + answer.latency_us * 1000
                from_actual_us = (completion - actual) // 1000
                records.append(
                    [tick, f"{session_prefix}{index}", 0, intended, actual, completion, answer.status,
                     answer.latency_us, from_actual_us, 10, 20, answer.batch_size, answer.server_total_us,
                     0, 0, 0]
                )  # fmt: skip
                ok += answer.status == "OK"
                failed += answer.status != "OK"
        for tick, answers in enumerate(self.ticks):
            errors = sum(a.status != "OK" for a in answers)
            series.append([tick, 10.0, len(answers), len(answers), len(answers) - errors, errors,
                           self.not_sent_per_tick, 0, 1.0, 2.0, 3.0])  # fmt: skip
        for name, header, rows in (
            ("records.csv", RECORD_FIELDS, records),
            ("series.csv", SERIES_FIELDS, series),
        ):
            with (folder / name).open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)
        sent = len(records)
        not_sent = self.not_sent_per_tick * len(self.ticks)
        return loadgen_pb2.LoadSummary(
            run_id=folder.name,
            requests_sent=sent,
            requests_ok=ok,
            requests_failed=failed,
            errors_by_status={"DEADLINE_EXCEEDED": failed} if failed else {},
            requests_not_sent=not_sent,
            requests_offered=sent + not_sent,
            duration_s=len(self.ticks) + 0.5,
            achieved_rate_per_s=ok / (len(self.ticks) + 0.5),
            achieved_hold_rate_per_s=5.0,
            ticks=len(self.ticks),
        )


def _answers(rng: np.random.Generator, count: int, errors: int = 0) -> list[Answer]:
    latencies = rng.lognormal(mean=9.0, sigma=1.0, size=count).astype(int) + 1
    answers = [Answer(int(latency), batch_size=int(rng.integers(1, 9))) for latency in latencies]
    for index in range(errors):
        answers[index].status = "DEADLINE_EXCEEDED"
    return answers


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[list[SyntheticRun], list[Path], list[loadgen_pb2.LoadSummary]]:
    rng = np.random.default_rng(11)
    # Two processes, two unrelated perf_counter clocks, the same wall clock.
    runs = [
        SyntheticRun(5_000_000_000, [_answers(rng, 40), _answers(rng, 90, errors=3), _answers(rng, 70)]),
        SyntheticRun(
            917_000_000_000,
            [_answers(rng, 35), _answers(rng, 80), _answers(rng, 60, errors=2)],
            drain=_answers(rng, 5),
        ),
    ]
    folders = [tmp_path / f"loadgen-{index}" for index in range(2)]
    summaries = [run.write(folder) for run, folder in zip(runs, folders, strict=True)]
    return runs, folders, summaries


def test_merged_percentiles_equal_one_histogram_over_every_record(two_runs, tmp_path: Path) -> None:
    runs, folders, summaries = two_runs
    merged = merge_runs(folders, summaries, tmp_path, "trial")

    every_ok = [a for run in runs for answers in [*run.ticks, run.drain] for a in answers if a.status == "OK"]
    expected = LatencyHistogram()
    for answer in every_ok:
        expected.record_us(answer.latency_us)
    assert merged.latency_from_intended == expected.summary()
    assert merged.latency_from_intended.count == len(every_ok) == merged.requests_ok
    assert merged.server_inference.count == merged.server_queue.count == len(every_ok)
    assert merged.mean_batch_size == pytest.approx(np.mean([a.batch_size for a in every_ok]))
    # The merged summary.json is the returned summary.
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["run_id"] == "trial" and int(stored["requests_ok"]) == merged.requests_ok


def test_merged_counts_and_rates_are_the_sums_of_the_instances(two_runs, tmp_path: Path) -> None:
    _, folders, summaries = two_runs
    merged = merge_runs(folders, summaries, tmp_path, "trial")
    for name in ("requests_sent", "requests_ok", "requests_failed", "requests_not_sent", "requests_offered"):
        assert getattr(merged, name) == sum(getattr(s, name) for s in summaries), name
    assert dict(merged.errors_by_status) == {"DEADLINE_EXCEEDED": 5}
    assert merged.achieved_rate_per_s == pytest.approx(sum(s.achieved_rate_per_s for s in summaries))
    assert merged.achieved_hold_rate_per_s == pytest.approx(10.0)
    assert merged.requests_offered == merged.requests_sent + merged.requests_not_sent
    assert len(_read(tmp_path / "records.csv")) == merged.requests_sent


def test_series_ticks_add_up_and_take_the_percentiles_of_the_answers_completed_in_them(
    two_runs, tmp_path: Path
) -> None:
    runs, folders, summaries = two_runs
    merge_runs(folders, summaries, tmp_path, "trial")
    series = _read(tmp_path / "series.csv")
    assert [int(row["tick"]) for row in series] == [0, 1, 2]
    for tick, row in enumerate(series):
        answers = [a for run in runs for a in run.ticks[tick]]
        assert int(row["sent"]) == int(row["completed"]) == len(answers)
        assert int(row["errors"]) == sum(a.status != "OK" for a in answers)
        assert int(row["ok"]) + int(row["errors"]) == int(row["completed"])
        assert int(row["not_sent"]) == 2
        assert float(row["target_rate_per_s"]) == 20.0
        # The drain's answers belong to no tick: only those completed in this one count.
        histogram = LatencyHistogram()
        for answer in answers:
            if answer.status == "OK":
                histogram.record_us(answer.latency_us)
        expected = histogram.percentiles_ms([50, 90, 99])
        assert [float(row[name]) for name in ("p50_ms", "p90_ms", "p99_ms")] == pytest.approx(expected)
    assert json.loads((tmp_path / "run.json").read_text())["tick_rates_per_s"] == [20.0, 20.0, 20.0]


def test_records_share_instance_0s_clock_are_sorted_by_intended_send_and_keep_sessions_apart(
    two_runs, tmp_path: Path
) -> None:
    _, folders, summaries = two_runs
    originals = [_read(folder / "records.csv") for folder in folders]
    merge_runs(folders, summaries, tmp_path, "trial")
    records = _read(tmp_path / "records.csv")

    intended = [int(row["intended_send_ns"]) for row in records]
    assert intended == sorted(intended)
    # Both runs started at the same wall-clock instant: their first requests now coincide.
    first_of_1 = min(int(r["intended_send_ns"]) for r in records if r["session_id"].endswith("#1"))
    assert first_of_1 == int(originals[0][0]["intended_send_ns"])
    # Instance 0's rows are untouched (they still join its traces); instance 1's sessions are its own.
    rows_of_0 = [r for r in records if "#" not in r["session_id"]]
    assert sorted(rows_of_0, key=lambda r: int(r["intended_send_ns"])) == sorted(
        originals[0], key=lambda r: int(r["intended_send_ns"])
    )
    assert len(records) - len(rows_of_0) == len(originals[1])
    for row in records:
        assert (
            int(row["completion_ns"]) - int(row["intended_send_ns"])
            == int(row["latency_from_intended_us"]) * 1000
        )


def test_a_missing_file_fails_naming_it(two_runs, tmp_path: Path) -> None:
    _, folders, summaries = two_runs
    (folders[1] / "series.csv").unlink()
    with pytest.raises(MergeError, match=r"loadgen-1/series\.csv"):
        merge_runs(folders, summaries, tmp_path, "trial")


def test_progress_is_passed_on_once_per_tick_with_the_counts_added() -> None:
    emitted: list[loadgen_pb2.TickProgress] = []
    merger = ProgressMerger(2, "trial", emitted.append)

    def tick(index: int, sent: int, p99_ms: float) -> loadgen_pb2.TickProgress:
        return loadgen_pb2.TickProgress(run_id="x", tick=index, target_rate_per_s=5, sent=sent, p99_ms=p99_ms)

    merger.add(0, tick(0, 3, 1.0))
    merger.add(0, tick(1, 4, 2.0))
    assert emitted == []  # instance 1 has not reported tick 0 yet
    merger.add(1, tick(0, 2, 7.0))
    assert [(p.tick, p.sent, p.target_rate_per_s, p.p99_ms, p.run_id) for p in emitted] == [
        (0, 5, 10, 7.0, "trial")
    ]
    merger.finish(1)  # instance 1 ran out of sessions: tick 1 is complete with what came
    assert [(p.tick, p.sent) for p in emitted] == [(0, 5), (1, 4)]
    merger.add(0, tick(2, 1, 0.0))
    merger.finish(0)
    assert [p.tick for p in emitted] == [0, 1, 2]


def test_the_load_generators_footprints_add_up_and_one_over_budget_flags_the_trial(
    two_runs, tmp_path: Path
) -> None:
    _, folders, summaries = two_runs
    for summary, (cpu_s, cores, over) in zip(summaries, [(0.5, 0.3, False), (1.5, 0.7, True)], strict=True):
        summary.transport = "stream"
        summary.footprint.cpu_s, summary.footprint.cores_used = cpu_s, cores
        summary.footprint.core_budget, summary.footprint.over_core_budget = 0.5, over
    merged = merge_runs(folders, summaries, tmp_path, "trial")
    assert merged.transport == "stream"
    assert merged.footprint.cpu_s == pytest.approx(2.0)
    assert merged.footprint.cpu_us_per_request == pytest.approx(2.0e6 / merged.requests_sent)
    assert merged.footprint.cores_used == pytest.approx(1.0) and merged.footprint.over_core_budget
    # Send lateness from every record: actual minus intended send time.
    assert merged.footprint.send_lateness.count == merged.requests_sent
