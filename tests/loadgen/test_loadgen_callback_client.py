"""The generator with a callback client (no task per request): the same schedule, the same records,
failures inside `start` counted, cancellation through `cancel_all`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from etude.services.loadgen.generator import CANCELLED, CLIENT_ERROR, OK, LoadGenerator, OnDone, Outcome
from etude.services.results.layout import RECORDS_FILE
from etude.services.results.records import read_records as read_record_columns
from loadgen_fakes import endless_sessions

from etude.v1 import loadgen_pb2


class CallbackClient:
    """Answers OK after `delay_s` through a loop timer; can raise inside `start` at one call."""

    transport = "fake-callback"

    def __init__(self, delay_s: float = 0.002, raise_at_call: int | None = None) -> None:
        self.delay_s = delay_s
        self.raise_at_call = raise_at_call
        self.calls: list[tuple[str, list[int]]] = []
        self.pending: dict[int, tuple[asyncio.TimerHandle, OnDone]] = {}
        self.most_tasks = 0

    def start(
        self, session_id: str, item_ids: Sequence[int], k: int, timeout_s: float, on_done: OnDone
    ) -> None:
        call = len(self.calls)
        self.calls.append((session_id, list(item_ids)))
        self.most_tasks = max(self.most_tasks, len(asyncio.all_tasks()))
        if call == self.raise_at_call:
            raise RuntimeError("a client bug")
        handle = asyncio.get_running_loop().call_later(self.delay_s, self._answer, call)
        self.pending[call] = (handle, on_done)

    def _answer(self, call: int) -> None:
        _, on_done = self.pending.pop(call)
        on_done(Outcome(OK, queue_us=10, inference_us=20, batch_size=3, server_total_us=40))

    def cancel_all(self) -> None:
        pending, self.pending = self.pending, {}
        for handle, on_done in pending.values():
            handle.cancel()
            on_done(Outcome(CANCELLED))


def profile(rate: float, hold_s: int = 1, timeout_ms: int = 0) -> loadgen_pb2.LoadProfile:
    return loadgen_pb2.LoadProfile(
        target_rate_per_s=rate, ramp_duration_s=0, hold_duration_s=hold_s, request_timeout_ms=timeout_ms
    )


async def test_a_callback_client_is_driven_without_a_task_per_request() -> None:
    client = CallbackClient(delay_s=0.05)
    summary = await LoadGenerator(client, endless_sessions(), profile(200.0)).run()
    assert summary.requests_sent == summary.requests_ok == 200
    assert summary.transport == "fake-callback"
    # 50 ms answers at 200 req/s keep about 10 requests in flight, yet the only tasks are the
    # run and the one pulling sessions ahead (services/loadgen/session_buffer.py).
    assert client.most_tasks == 2
    assert summary.mean_batch_size == 3.0
    assert summary.server_queue.p50_ms == 0.01


async def test_a_client_raising_inside_start_counts_as_a_client_error(tmp_path: Path) -> None:
    client = CallbackClient(raise_at_call=2)
    summary = await LoadGenerator(client, endless_sessions(), profile(10.0), records_dir=tmp_path).run()
    assert summary.requests_sent == 10
    assert dict(summary.errors_by_status) == {CLIENT_ERROR: 1}
    assert summary.requests_ok == 9


async def test_cancelling_a_run_goes_through_cancel_all() -> None:
    client = CallbackClient(delay_s=10.0)
    generator = LoadGenerator(client, endless_sessions(), profile(20.0, hold_s=5, timeout_ms=20_000))
    run = asyncio.create_task(generator.run())
    await asyncio.sleep(0.3)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    summary = generator.summary
    assert summary is not None and summary.requests_sent >= 5
    assert dict(summary.errors_by_status) == {CANCELLED: summary.requests_sent}
    assert client.pending == {}


class WireTimesClient(CallbackClient):
    """Answers saying its request went on the wire 300 us after `start` and its answer came off
    the wire 1 ms after that (what the h2 transport reports)."""

    def _answer(self, call: int) -> None:
        _, on_done = self.pending.pop(call)
        sent_ns = self.started_ns[call] + 300_000
        on_done(Outcome(OK, sent_ns=sent_ns, received_ns=sent_ns + 1_000_000))

    def start(
        self, session_id: str, item_ids: Sequence[int], k: int, timeout_s: float, on_done: OnDone
    ) -> None:
        self.started_ns = getattr(self, "started_ns", [])
        self.started_ns.append(time.perf_counter_ns())
        super().start(session_id, item_ids, k, timeout_s, on_done)


async def test_times_the_transport_reports_are_the_send_and_completion_of_the_records(tmp_path: Path) -> None:
    client = WireTimesClient(delay_s=0.005)
    summary = await LoadGenerator(client, endless_sessions(), profile(20.0), records_dir=tmp_path).run()
    assert summary.requests_ok == 20
    columns = read_record_columns(tmp_path / RECORDS_FILE)
    assert list(columns.completion_ns - columns.actual_send_ns) == [1_000_000] * 20
    assert list(columns.latency_from_actual_us) == [1_000] * 20
    assert summary.latency_from_actual.p50_ms == 1.0


async def test_at_a_rate_above_one_latency_batch_every_answer_is_in_the_histograms() -> None:
    client = CallbackClient(delay_s=0.002)
    summary = await LoadGenerator(client, endless_sessions(), profile(1500.0)).run()
    assert summary.requests_ok == 1500  # several latency batches within the tick, and the rest
    for distribution in (summary.latency_from_intended, summary.latency_from_actual, summary.server_queue):
        assert distribution.count == 1500
    assert summary.footprint.send_lateness.count == 1500
