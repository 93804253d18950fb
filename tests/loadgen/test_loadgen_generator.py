"""The load generator core against in-process fake clients: short real-time runs (1-2 ticks)."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from etude.services.loadgen.generator import (
    CANCELLED,
    CLIENT_ERROR,
    MAX_REQUEST_ITEMS,
    LoadGenerator,
    Outcome,
    Session,
)
from etude.services.loadgen.spec import InvalidLoadSpec
from etude.services.loadgen.stats import SIGNIFICANT_DIGITS
from etude.services.results.layout import RECORDS_FILE, RUN_FILE, SERIES_FILE, SUMMARY_FILE
from loadgen_fakes import FakeClient, FakeTimedClient, endless_sessions, sessions_from

from etude.v1 import loadgen_pb2


def profile(rate: float, ramp_s: int = 0, hold_s: int = 1, timeout_ms: int = 0) -> loadgen_pb2.LoadProfile:
    return loadgen_pb2.LoadProfile(
        target_rate_per_s=rate,
        ramp_duration_s=ramp_s,
        hold_duration_s=hold_s,
        request_timeout_ms=timeout_ms,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class Run:
    """A finished run: its summary, the progress it streamed, the client, the folder."""

    def __init__(
        self,
        summary: loadgen_pb2.LoadSummary,
        progress: list[loadgen_pb2.TickProgress],
        client: FakeClient,
        folder: Path,
    ) -> None:
        self.summary = summary
        self.progress = progress
        self.client = client
        self.folder = folder
        self.records = read_csv(folder / RECORDS_FILE)
        self.series = read_csv(folder / SERIES_FILE)


async def run_generator(
    client: Any, sessions: Any, load: loadgen_pb2.LoadProfile, folder: Path
) -> tuple[loadgen_pb2.LoadSummary, list[loadgen_pb2.TickProgress]]:
    progress: list[loadgen_pb2.TickProgress] = []
    generator = LoadGenerator(
        client, sessions, load, run_id="test-run", records_dir=folder, on_progress=progress.append
    )
    return await generator.run(), progress


@pytest.fixture(scope="module")
def steady_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Ramp over 2 s to 20 req/s against a client that keeps up (answers in 0-18 ms)."""
    folder = tmp_path_factory.mktemp("steady")
    client = FakeClient(delay_s=lambda call: (call % 7) * 0.003)
    summary, progress = asyncio.run(
        run_generator(client, endless_sessions(length=4), profile(20.0, ramp_s=2, hold_s=0), folder)
    )
    return Run(summary, progress, client, folder)


def test_every_request_the_ramp_asks_for_is_sent_when_the_server_keeps_up(steady_run: Run) -> None:
    summary = steady_run.summary
    assert [p.sent for p in steady_run.progress] == [10, 20]
    assert [p.target_rate_per_s for p in steady_run.progress] == [10.0, 20.0]
    assert summary.requests_offered == 30
    assert summary.requests_sent == 30
    assert summary.requests_ok == 30
    assert summary.requests_not_sent == 0
    assert summary.requests_failed == 0
    assert summary.ticks == 2
    assert summary.run_id == "test-run"


def test_records_file_has_one_row_per_request_sent(steady_run: Run) -> None:
    assert len(steady_run.records) == steady_run.summary.requests_sent
    assert all(row["status"] == "OK" for row in steady_run.records)
    for row in steady_run.records:
        intended, actual, done = (
            int(row["intended_send_ns"]),
            int(row["actual_send_ns"]),
            int(row["completion_ns"]),
        )
        assert intended <= actual <= done
        assert int(row["latency_from_intended_us"]) == (done - intended) // 1000
        assert int(row["latency_from_actual_us"]) == (done - actual) // 1000
        assert row["server_total_us"] == "300"


def test_series_file_has_one_row_per_tick_matching_the_progress(steady_run: Run) -> None:
    assert [int(row["tick"]) for row in steady_run.series] == [0, 1]
    assert [int(row["sent"]) for row in steady_run.series] == [p.sent for p in steady_run.progress]
    completed_in_ticks = sum(int(row["completed"]) for row in steady_run.series)
    assert completed_in_ticks <= steady_run.summary.requests_sent


def test_run_files_hold_the_clock_anchor_and_the_summary(steady_run: Run) -> None:
    run_info = json.loads((steady_run.folder / RUN_FILE).read_text())
    assert run_info["wall_clock_epoch_ns"] > 1_600_000_000 * 10**9
    assert run_info["tick_rates_per_s"] == [10.0, 20.0]
    summary = json.loads((steady_run.folder / SUMMARY_FILE).read_text())
    assert int(summary["requests_sent"]) == 30


def test_requests_of_a_tick_are_spread_evenly_over_the_tick(steady_run: Run) -> None:
    tick_one = sorted(int(row["intended_send_ns"]) for row in steady_run.records if row["tick"] == "1")
    gaps = {later - earlier for earlier, later in itertools.pairwise(tick_one)}
    # 20 requests in one second: one every 50 ms of the schedule (to the nanosecond's rounding).
    assert max(gaps) - min(gaps) <= 1
    assert min(gaps) == pytest.approx(50_000_000, abs=1)


def _nearest_rank(values: Sequence[int], percentile: float) -> int:
    """The value HdrHistogram reports: rank round(p * n) (at least 1) of the sorted values."""
    ordered = sorted(values)
    rank = max(1, int(percentile / 100 * len(ordered) + 0.5))
    return ordered[rank - 1]


@pytest.mark.parametrize(
    ("summary_field", "record_field"),
    [
        ("latency_from_intended", "latency_from_intended_us"),
        ("latency_from_actual", "latency_from_actual_us"),
    ],
)
def test_hdr_percentiles_agree_with_the_raw_records_within_the_precision(
    steady_run: Run, summary_field: str, record_field: str
) -> None:
    raw_us = [max(1, int(row[record_field])) for row in steady_run.records]
    latencies = getattr(steady_run.summary, summary_field)
    assert latencies.count == len(raw_us)
    relative_precision = 10.0**-SIGNIFICANT_DIGITS
    for percentile, value_ms in [
        (50, latencies.p50_ms),
        (90, latencies.p90_ms),
        (99, latencies.p99_ms),
    ]:
        exact_us = _nearest_rank(raw_us, percentile)
        # HDR reports the top of the value's bucket: never below, at most 0.1% above.
        assert exact_us <= value_ms * 1000 <= exact_us * (1 + relative_precision) + 1
    assert latencies.max_ms * 1000 >= max(raw_us)


def test_server_split_and_batch_size_come_from_the_answers(steady_run: Run) -> None:
    summary = steady_run.summary
    assert summary.server_queue.p50_ms == pytest.approx(0.1, rel=1e-3)
    assert summary.server_inference.p50_ms == pytest.approx(0.2, rel=1e-3)
    assert summary.mean_batch_size == 2.0
    # network_and_overhead = latency from actual - server total (300 us), clamped at 0.
    actual_us = sorted(max(0, int(row["latency_from_actual_us"]) - 300) for row in steady_run.records)
    assert summary.network_and_overhead.max_ms * 1000 >= actual_us[-1]


async def test_backpressure_counts_what_it_could_not_send_when_the_server_stalls(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()
    client = FakeClient(release=release)
    progress: list[loadgen_pb2.TickProgress] = []

    def on_progress(tick: loadgen_pb2.TickProgress) -> None:
        progress.append(tick)
        if tick.tick == 1:
            release.set()

    generator = LoadGenerator(
        client,
        endless_sessions(),
        profile(10.0, hold_s=2),
        records_dir=tmp_path,
        on_progress=on_progress,
    )
    summary = await generator.run()
    # Tick 0 fills the in-flight bound (the tick's rate); tick 1 cannot send anything.
    assert [p.sent for p in progress] == [10, 0]
    assert [p.not_sent for p in progress] == [0, 10]
    assert [p.in_flight for p in progress] == [10, 10]
    assert client.max_in_flight == 10
    assert summary.requests_offered == 20
    assert summary.requests_sent == 10
    assert summary.requests_not_sent == 10
    assert summary.requests_ok == 10
    assert len(read_csv(tmp_path / RECORDS_FILE)) == 10


async def test_a_session_is_never_sent_again_before_its_previous_click_answered(
    tmp_path: Path,
) -> None:
    # Few, long sessions and slow answers: the generator must keep skipping busy sessions.
    sessions = [Session(f"s{index}", list(range(1, 41))) for index in range(6)]
    client = FakeClient(delay_s=lambda call: 0.005 + (call * 7919 % 11) * 0.004)
    summary, _ = await run_generator(client, sessions_from(sessions), profile(80.0), tmp_path)
    assert client.violations == []
    assert summary.requests_sent > 20
    assert client.max_in_flight > 1
    records = read_csv(tmp_path / RECORDS_FILE)
    for session in sessions:
        clicks = [
            int(row["click_index"])
            for row in sorted(records, key=lambda row: int(row["actual_send_ns"]))
            if row["session_id"] == session.session_id
        ]
        assert clicks == list(range(len(clicks)))


async def test_a_stalled_client_shows_in_latency_from_intended_not_from_actual(
    tmp_path: Path,
) -> None:
    stall_s = 0.2
    client = FakeClient(stall_loop_at_call=10, stall_loop_s=stall_s)
    summary, _ = await run_generator(client, endless_sessions(), profile(50.0), tmp_path)
    records = read_csv(tmp_path / RECORDS_FILE)
    # The requests scheduled during the stall went out late, all at once when it ended.
    late = [row for row in records if int(row["actual_send_ns"]) - int(row["intended_send_ns"]) > 100_000_000]
    assert len(late) >= 3
    for row in late:
        waited_us = (int(row["actual_send_ns"]) - int(row["intended_send_ns"])) // 1000
        assert int(row["latency_from_intended_us"]) >= waited_us
        assert int(row["latency_from_actual_us"]) < 100_000
    assert summary.latency_from_intended.max_ms >= 100
    # Everything scheduled was still sent: the stall was caught up, not dropped.
    assert summary.requests_sent == 50
    assert summary.requests_not_sent == 0


async def test_failures_are_counted_by_status_and_kept_out_of_the_latency(tmp_path: Path) -> None:
    class FlakyClient(FakeClient):
        async def recommend(
            self, session_id: str, item_ids: Sequence[int], k: int, timeout_s: float
        ) -> Outcome:
            if self.calls == 3:
                self.calls += 1
                raise RuntimeError("a client bug")
            return await super().recommend(session_id, item_ids, k, timeout_s)

    client = FlakyClient(status=lambda call: "DEADLINE_EXCEEDED" if call % 5 == 0 else "OK")
    summary, progress = await run_generator(client, endless_sessions(), profile(10.0), tmp_path)
    # The fake counts calls 0..9: call 3 raises, calls 0 and 5 answer DEADLINE_EXCEEDED.
    assert summary.requests_sent == 10
    assert dict(summary.errors_by_status) == {"DEADLINE_EXCEEDED": 2, CLIENT_ERROR: 1}
    assert summary.requests_failed == 3
    assert summary.requests_ok == 7
    assert summary.latency_from_intended.count == 7
    assert sum(p.errors for p in progress) <= 3


async def test_an_exhausted_workload_ends_the_run_and_counts_the_rest_as_not_sent(
    tmp_path: Path,
) -> None:
    sessions = [Session("a", [1, 2]), Session("empty", []), Session("b", [3, 4])]
    client = FakeClient()
    summary, progress = await run_generator(
        client, sessions_from(sessions), profile(10.0, hold_s=3), tmp_path
    )
    assert summary.requests_sent == 4
    assert summary.ticks == 1
    assert summary.requests_offered == 10
    assert summary.requests_not_sent == 6
    assert len(progress) == 1
    assert client.violations == []


async def test_cancelling_a_run_cancels_in_flight_requests_and_still_writes_the_summary(
    tmp_path: Path,
) -> None:
    client = FakeClient(delay_s=lambda _: 10.0)
    first_tick = asyncio.Event()
    generator = LoadGenerator(
        client,
        endless_sessions(),
        profile(20.0, hold_s=5, timeout_ms=10_000),
        records_dir=tmp_path,
        on_progress=lambda _: first_tick.set(),
    )
    run = asyncio.create_task(generator.run())
    await first_tick.wait()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert time.monotonic() - started < 5  # did not wait for the 10 s answers
    summary = generator.summary
    assert summary is not None
    assert summary.requests_sent >= 20
    assert summary.requests_ok == 0
    assert dict(summary.errors_by_status) == {CANCELLED: summary.requests_sent}
    assert summary.requests_offered == summary.requests_sent + summary.requests_not_sent
    assert summary.ticks == 2
    written = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert int(written["requests_sent"]) == summary.requests_sent
    assert len(read_csv(tmp_path / RECORDS_FILE)) == summary.requests_sent


def test_a_run_without_records_dir_writes_nothing_and_still_summarises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    generator = LoadGenerator(FakeClient(), endless_sessions(), profile(5.0))
    summary = asyncio.run(generator.run())
    assert summary.requests_ok == 5
    assert summary.records_dir == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("target_rate_per_s", 0.0),
        ("target_rate_per_s", math.nan),
        ("ramp_duration_s", -1),
        ("hold_duration_s", -2),
        ("request_timeout_ms", -1),
        ("k", -3),
    ],
)
def test_a_profile_out_of_range_is_rejected_naming_the_field(field: str, value: float) -> None:
    load = profile(10.0)
    setattr(load, field, value)
    with pytest.raises(InvalidLoadSpec, match=field) as raised:
        LoadGenerator(FakeClient(), endless_sessions(), load)
    assert raised.value.field == f"profile.{field}"


async def test_a_session_longer_than_a_request_may_carry_is_sent_whole_with_its_latest_clicks(
    tmp_path: Path,
) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.requests: list[list[int]] = []

        async def recommend(
            self, session_id: str, item_ids: Sequence[int], k: int, timeout_s: float
        ) -> Outcome:
            self.requests.append(list(item_ids))
            return Outcome("OK")

    clicks = list(range(1, MAX_REQUEST_ITEMS + 6))
    client = Recorder()
    summary, _ = await run_generator(
        client, sessions_from([Session("long", clicks)]), profile(2000.0, hold_s=10), tmp_path
    )
    # Every click of the session is a request; none carries more than the service accepts.
    assert summary.requests_sent == len(clicks)
    assert [request[-1] for request in client.requests] == clicks
    assert client.requests[MAX_REQUEST_ITEMS - 1] == clicks[:MAX_REQUEST_ITEMS]
    assert client.requests[-1] == clicks[-MAX_REQUEST_ITEMS:]


def intended_s_of(records: list[dict[str, str]]) -> dict[tuple[str, int], float]:
    """Each request's intended send time, in seconds from the earliest one."""
    start_ns = min(int(row["intended_send_ns"]) for row in records)
    return {
        (row["session_id"], int(row["click_index"])): (int(row["intended_send_ns"]) - start_ns) / 1e9
        for row in records
    }


async def test_paced_by_the_log_each_click_is_intended_at_its_offset_over_the_speedup(tmp_path: Path) -> None:
    sessions = [
        Session("1", [1, 2, 3], [0.0, 4.0, 9.0]),
        Session("2", [4, 5], [2.0, 3.0]),
        Session("3", [6], [12.0]),
    ]
    generator = LoadGenerator(
        FakeClient(), sessions_from(sessions), profile(1.0, hold_s=3), records_dir=tmp_path, log_speedup=10.0
    )
    summary = await generator.run()
    intended_s = intended_s_of(read_csv(tmp_path / RECORDS_FILE))
    assert intended_s == pytest.approx(
        {("1", 0): 0.0, ("2", 0): 0.2, ("2", 1): 0.3, ("1", 1): 0.4, ("1", 2): 0.9, ("3", 0): 1.2},
        abs=1e-6,
    )
    # The log was replayed whole, in 2 ticks, although the profile's rate is 1 request/s.
    assert summary.requests_sent == summary.requests_offered == 6
    assert summary.requests_not_sent == 0 and summary.ticks == 2


async def test_paced_by_the_log_a_click_waits_for_its_previous_answer_and_counts_the_wait(
    tmp_path: Path,
) -> None:
    client = FakeClient(delay_s=lambda call: 0.3 if call == 0 else 0.0)
    sessions = [Session("1", [1, 2], [0.0, 0.1])]
    generator = LoadGenerator(
        client, sessions_from(sessions), profile(1.0, hold_s=2), records_dir=tmp_path, log_speedup=1.0
    )
    summary = await generator.run()
    assert client.violations == []
    second = next(row for row in read_csv(tmp_path / RECORDS_FILE) if row["click_index"] == "1")
    late_s = (int(second["actual_send_ns"]) - int(second["intended_send_ns"])) / 1e9
    assert late_s >= 0.15
    assert int(second["latency_from_intended_us"]) / 1e6 >= late_s
    assert summary.requests_sent == 2


async def test_paced_by_the_log_sends_are_open_loop_not_held_back_by_requests_in_flight(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()
    client = FakeClient(release=release)
    sessions = [Session(str(index), [index], [0.01 * index]) for index in range(1, 41)]
    generator = LoadGenerator(
        client, sessions_from(sessions), profile(1.0, hold_s=2), records_dir=tmp_path, log_speedup=1.0
    )
    run = asyncio.create_task(generator.run())
    await asyncio.sleep(0.8)
    # All 40 clicks fell due in the first 0.4 s: all are in flight, none answered yet.
    assert client.max_in_flight == 40
    release.set()
    summary = await run
    assert summary.requests_ok == 40


async def test_pacing_by_the_log_needs_sessions_with_click_times(tmp_path: Path) -> None:
    client = FakeClient()
    generator = LoadGenerator(client, sessions_from([Session("1", [1, 2])]), profile(1.0), log_speedup=2.0)
    with pytest.raises(InvalidLoadSpec, match="log_speedup: session 1 has no click times"):
        await generator.run()
    assert client.calls == 0


@pytest.mark.parametrize("speedup", [-1.0, 2e6, math.inf])
def test_a_log_speedup_out_of_range_is_refused_naming_the_field(speedup: float) -> None:
    with pytest.raises(InvalidLoadSpec, match="log_speedup"):
        LoadGenerator(FakeClient(), endless_sessions(), profile(1.0), log_speedup=speedup)


async def test_paced_by_the_log_a_sessions_overdue_clicks_follow_each_answer_within_the_tick(
    tmp_path: Path,
) -> None:
    # Ten clicks all due at once: each follows its predecessor's answer, not the next tick.
    sessions = [Session("1", list(range(1, 11)), [0.0] * 10)]
    client = FakeClient(delay_s=lambda call: 0.01)
    generator = LoadGenerator(
        client, sessions_from(sessions), profile(1.0, hold_s=3), records_dir=tmp_path, log_speedup=1.0
    )
    summary = await generator.run()
    assert summary.requests_sent == 10 and summary.ticks == 1
    assert client.violations == []


class DeafClient:
    """Answers nothing and does not report a cancelled call until released (a transport that
    lost its server): what makes a cancelled run wait for its last answers."""

    def __init__(self) -> None:
        self.released = asyncio.Event()

    async def recommend(self, session_id: str, item_ids: Sequence[int], k: int, timeout_s: float) -> Outcome:
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                continue
        return Outcome(CANCELLED)


async def test_a_run_cancelled_again_while_it_winds_down_still_writes_the_summary(tmp_path: Path) -> None:
    client = DeafClient()
    first_tick = asyncio.Event()
    generator = LoadGenerator(
        client,
        endless_sessions(),
        profile(20.0, hold_s=5, timeout_ms=10_000),
        records_dir=tmp_path,
        on_progress=lambda _: first_tick.set(),
    )
    run = asyncio.create_task(generator.run())
    await first_tick.wait()
    run.cancel()
    await asyncio.sleep(0.5)  # now waiting for answers that do not come
    assert not run.done() and not (tmp_path / SUMMARY_FILE).exists()
    run.cancel()  # as a server stopping at the end of its grace cancels its calls again
    try:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, 5)
        written = json.loads((tmp_path / SUMMARY_FILE).read_text())
        assert int(written["requests_sent"]) >= 20
    finally:
        client.released.set()
        await asyncio.sleep(0)


async def test_a_timed_client_gets_each_request_ahead_with_its_intended_send_time(tmp_path: Path) -> None:
    client = FakeTimedClient(lead_ns=2_000_000, write_delay_ns=100_000)
    summary, _ = await run_generator(client, endless_sessions(length=3), profile(200.0, hold_s=2), tmp_path)
    records = read_csv(tmp_path / RECORDS_FILE)
    assert summary.requests_sent == len(client.handed_over) == 400
    # Each request is handed over with the schedule's intended time, never more than two leads ahead.
    intended = sorted(int(row["intended_send_ns"]) for row in records)
    assert sorted(send_at for _, send_at in client.handed_over) == intended
    assert all(send_at - when <= 2 * client.lead_ns for when, send_at in client.handed_over)
    # Most ahead of time: the generator wakes about once per lead, not per request.
    ahead = sum(1 for when, send_at in client.handed_over if when < send_at)
    assert ahead >= 0.9 * len(client.handed_over)


async def test_with_a_timed_client_the_send_lateness_is_the_transports(tmp_path: Path) -> None:
    client = FakeTimedClient(write_delay_ns=100_000, answer_after_ns=300_000)
    summary, _ = await run_generator(client, endless_sessions(length=3), profile(100.0, hold_s=1), tmp_path)
    records = read_csv(tmp_path / RECORDS_FILE)
    lateness = summary.footprint.send_lateness
    assert lateness.count == summary.requests_sent == 100
    # The fake writes each request 0.1 ms after its send time (later only when handed over late).
    assert lateness.p50_ms == pytest.approx(0.1, abs=0.001)
    for row in records:
        assert int(row["actual_send_ns"]) - int(row["intended_send_ns"]) >= 100_000
        assert int(row["latency_from_actual_us"]) == 300
