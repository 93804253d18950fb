"""The dynamic batcher: batch formation, delay from the oldest arrival, bounds, deadlines, stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from etude.services.inference.batcher import (
    BatcherStopped,
    DeadlineExpired,
    DynamicBatcher,
    QueueFull,
    QueueWaitTooLong,
    WouldMissDeadline,
)
from etude.services.inference.cost_model import BatchCostModel

# Generous: a test that waits this long has failed (these are not timing assertions).
HANG_S = 10.0


class RecordingHandler:
    """Doubles each request and records the batches it saw (from the model thread)."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def __call__(self, requests: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(requests))
        if self.fail_on in requests:
            raise RuntimeError(f"model failed on {self.fail_on}")
        return [2 * request for request in requests]


class BlockingHandler(RecordingHandler):
    """Blocks every batch until released, so a test can fill the queue behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, requests: list[int]) -> list[int]:
        self.entered.set()
        self.release.wait(HANG_S)
        return super().__call__(requests)


async def started(batcher: DynamicBatcher[int, int]) -> DynamicBatcher[int, int]:
    await batcher.start()
    return batcher


async def test_fills_batches_up_to_max_batch_size_without_waiting_for_the_delay() -> None:
    handler = RecordingHandler()
    # A one-minute delay: only "batch full" can form these batches in time.
    batcher = await started(
        DynamicBatcher(handler, max_batch_size=4, max_batch_delay_ms=60_000, max_queue_size=64)
    )
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(8))), HANG_S)
    await batcher.stop()
    assert [r.result for r in results] == [2 * i for i in range(8)]
    assert handler.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(r.batch_size == 4 for r in results)


async def test_flushes_a_partial_batch_once_the_oldest_request_waited_max_delay() -> None:
    handler = RecordingHandler()
    batcher = await started(DynamicBatcher(handler, max_batch_size=100, max_batch_delay_ms=20))
    outcome = await asyncio.wait_for(batcher.submit(7), HANG_S)
    await batcher.stop()
    assert outcome.result == 14
    assert outcome.batch_size == 1
    assert outcome.queued_ns >= 20_000_000  # it waited for the delay, then ran alone


async def test_delay_runs_from_the_oldest_arrival_not_from_the_batch_start() -> None:
    handler = RecordingHandler()
    # Arrived 20 s ago with a 10 s delay: counted from its arrival the delay is already up;
    # counted from when the batcher first looks (Ray Serve's way) it would wait 10 s more.
    batcher = await started(DynamicBatcher(handler, max_batch_size=100, max_batch_delay_ms=10_000))
    arrival_ns = time.monotonic_ns() - 20_000_000_000
    outcome = await asyncio.wait_for(batcher.submit(1, arrival_ns=arrival_ns), 5.0)
    await batcher.stop()
    assert outcome.result == 2
    assert outcome.queued_ns >= 20_000_000_000


async def test_handler_runs_in_one_dedicated_thread_off_the_event_loop() -> None:
    handler = RecordingHandler()
    batcher = await started(
        DynamicBatcher(handler, max_batch_size=2, max_batch_delay_ms=1, inline_below_us=0)
    )
    for i in range(5):
        await batcher.submit(i)
    await batcher.stop()
    assert len(handler.threads) == 1
    assert threading.current_thread().name not in handler.threads


async def test_queue_full_is_refused_at_once_and_the_batcher_keeps_serving() -> None:
    handler = BlockingHandler()
    batcher = await started(DynamicBatcher(handler, max_batch_size=1, max_batch_delay_ms=0, max_queue_size=2))
    in_model = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(handler.entered.wait, HANG_S)
    waiting = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    assert batcher.queue_size == 2
    with pytest.raises(QueueFull, match="max_queue_size = 2"):
        await batcher.submit(4)
    handler.release.set()
    assert [r.result for r in await asyncio.gather(in_model, *waiting)] == [2, 4, 6]
    assert (await batcher.submit(5)).result == 10
    await batcher.stop()


async def test_expired_deadline_is_dropped_before_inference() -> None:
    handler = BlockingHandler()
    # A cost model that believes batches are free admits the 1 ms request (else refused at once).
    batcher = await started(
        DynamicBatcher(handler, max_batch_size=8, max_batch_delay_ms=0, cost_model=BatchCostModel(prior_ms=0))
    )
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(handler.entered.wait, HANG_S)
    # Queued behind the blocked batch with a deadline 1 ms away: expired when its batch forms.
    soon_ns = time.monotonic_ns() + 1_000_000
    expiring = asyncio.create_task(batcher.submit(2, deadline_ns=soon_ns))
    kept = asyncio.create_task(batcher.submit(3, deadline_ns=soon_ns + 60_000_000_000))
    await asyncio.sleep(0.01)
    handler.release.set()
    assert (await first).result == 2
    with pytest.raises(DeadlineExpired):
        await expiring
    assert (await kept).result == 6
    await batcher.stop()
    assert handler.batches == [[1], [3]]


async def test_handler_exception_fails_only_that_batchs_requests() -> None:
    handler = RecordingHandler(fail_on=13)
    batcher = await started(DynamicBatcher(handler, max_batch_size=1, max_batch_delay_ms=0))
    results = await asyncio.gather(
        batcher.submit(12), batcher.submit(13), batcher.submit(14), return_exceptions=True
    )
    assert results[0].result == 24  # type: ignore[union-attr]
    assert isinstance(results[1], RuntimeError)
    assert results[2].result == 28  # type: ignore[union-attr]
    assert (await batcher.submit(15)).result == 30
    await batcher.stop()


async def test_handler_returning_the_wrong_number_of_results_fails_the_batch() -> None:
    batcher = await started(DynamicBatcher(lambda requests: [0], max_batch_size=2))
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    await batcher.stop()
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_cancelled_request_never_reaches_the_model() -> None:
    handler = BlockingHandler()
    batcher = await started(DynamicBatcher(handler, max_batch_size=8, max_batch_delay_ms=0))
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(handler.entered.wait, HANG_S)
    withdrawn = asyncio.create_task(batcher.submit(2))
    kept = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0)
    withdrawn.cancel()
    handler.release.set()
    await asyncio.gather(first, kept)
    await batcher.stop()
    assert handler.batches == [[1], [3]]


async def test_stop_with_drain_answers_every_waiting_request() -> None:
    handler = RecordingHandler()
    batcher = await started(DynamicBatcher(handler, max_batch_size=100, max_batch_delay_ms=60_000))
    pending = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.wait_for(batcher.stop(drain=True), HANG_S)
    assert [(await p).result for p in pending] == [0, 2, 4]
    with pytest.raises(BatcherStopped):
        await batcher.submit(9)


async def test_stop_without_drain_fails_waiting_requests_and_leaves_no_task() -> None:
    handler = RecordingHandler()
    batcher = await started(DynamicBatcher(handler, max_batch_size=100, max_batch_delay_ms=60_000))
    pending = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.wait_for(batcher.stop(drain=False), HANG_S)
    for task in pending:
        with pytest.raises(BatcherStopped):
            await task
    assert handler.batches == []
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize(
    "knobs",
    [
        {"max_batch_size": 0},
        {"max_batch_delay_ms": -1.0},
        {"max_queue_size": 0},
        {"max_queue_wait_ms": -1.0},
        {"executors": 0},
        {"inline_below_us": -1.0},
    ],
)
def test_rejects_nonsensical_knobs(knobs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(knobs))):
        DynamicBatcher(RecordingHandler(), **knobs)  # type: ignore[arg-type]


MS = 1_000_000


def learnt(cost_ms_by_size: dict[int, float]) -> BatchCostModel:
    """A cost model that has seen batches of these sizes take these times."""
    model = BatchCostModel()
    for size, cost_ms in cost_ms_by_size.items():
        model.observe(size, round(cost_ms * MS))
    return model


async def test_request_that_would_finish_after_its_deadline_is_refused_at_arrival() -> None:
    handler = BlockingHandler()
    # Batches take 100 ms: one is in the model and three requests wait ahead, in batches of 1.
    batcher = await started(
        DynamicBatcher(handler, max_batch_size=1, max_batch_delay_ms=0, cost_model=learnt({1: 100}))
    )
    running = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(handler.entered.wait, HANG_S)
    queued = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    now_ns = time.monotonic_ns()
    # ~100 ms left of the running batch + 3 x 100 ms ahead + 100 ms of its own: ~500 ms.
    with pytest.raises(WouldMissDeadline, match=r"would finish in ~\d+\.\d ms, deadline in \d+\.\d ms"):
        await batcher.submit(5, deadline_ns=now_ns + 300 * MS)
    accepted = asyncio.create_task(batcher.submit(6, deadline_ns=now_ns + 60_000 * MS))
    await asyncio.sleep(0)
    handler.release.set()
    assert [r.result for r in await asyncio.gather(running, *queued, accepted)] == [2, 4, 6, 8, 12]
    await batcher.stop()
    assert 5 not in [request for batch in handler.batches for request in batch]


async def test_admission_spreads_the_work_ahead_over_every_executor() -> None:
    handler = BlockingHandler()
    one = await started(
        DynamicBatcher(handler, max_batch_size=1, max_batch_delay_ms=60_000, cost_model=learnt({1: 100}))
    )
    two = await started(
        DynamicBatcher(
            handler, max_batch_size=1, max_batch_delay_ms=60_000, executors=2, cost_model=learnt({1: 100})
        )
    )
    # Six requests in each: batches of one, the first ones blocked in the model.
    pending = [asyncio.create_task(b.submit(i)) for b in (one, two) for i in range(6)]
    await asyncio.sleep(0)
    now_ns = time.monotonic_ns()
    # 7 batches of 100 ms (one running, five queued, its own): 700 ms on one executor, 400 ms
    # (4 rounds) on two. Not timing: the cost model's figures, less the microseconds since dispatch.
    assert one.forecast(now_ns).finish_ns - now_ns == pytest.approx(700 * MS, abs=5 * MS)
    assert two.forecast(now_ns).finish_ns - now_ns == pytest.approx(400 * MS, abs=5 * MS)
    handler.release.set()
    await asyncio.gather(*pending)
    await one.stop()
    await two.stop()


async def test_queued_request_that_can_no_longer_make_its_deadline_never_reaches_the_model() -> None:
    handler = BlockingHandler()
    batcher = await started(
        DynamicBatcher(handler, max_batch_size=8, max_batch_delay_ms=0, cost_model=learnt({1: 100}))
    )
    blocker = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(handler.entered.wait, HANG_S)
    # Admitted: at most 100 ms left of the running batch + 100 ms of its own fit in 250 ms.
    doomed = asyncio.create_task(batcher.submit(2, deadline_ns=time.monotonic_ns() + 250 * MS))
    await asyncio.sleep(0)
    assert batcher.queue_size == 1
    # The running batch overruns its estimate: once it ends, a 100 ms batch no longer fits.
    await asyncio.sleep(0.15)
    handler.release.set()
    await blocker
    with pytest.raises(DeadlineExpired):
        await doomed
    await batcher.stop()
    assert handler.batches == [[1]]


async def test_a_batch_is_cut_at_the_size_its_most_urgent_member_can_afford() -> None:
    handler = RecordingHandler()
    # Estimates of a second per request (the handler itself is instant): est(n) = n seconds.
    batcher = await started(
        DynamicBatcher(
            handler, max_batch_size=64, max_batch_delay_ms=60_000, cost_model=learnt({1: 1_000, 33: 33_000})
        )
    )
    now_ns = time.monotonic_ns()
    urgent = asyncio.create_task(batcher.submit(1, deadline_ns=now_ns + 6_000 * MS))
    relaxed = [
        asyncio.create_task(batcher.submit(i, deadline_ns=now_ns + 600_000 * MS)) for i in range(2, 41)
    ]
    await asyncio.sleep(0)
    await batcher.stop(drain=True)  # forms the batches now instead of after the one-minute delay
    await asyncio.gather(urgent, *relaxed)
    # The urgent request affords 6 s: a batch of 5 (5.5 s with the headroom); the rest run after it.
    assert handler.batches == [[1, 2, 3, 4, 5], list(range(6, 41))]


async def test_expected_wait_beyond_max_queue_wait_is_refused_even_without_a_deadline() -> None:
    handler = BlockingHandler()
    batcher = await started(
        DynamicBatcher(
            handler,
            max_batch_size=1,
            max_batch_delay_ms=0,
            max_queue_wait_ms=250,
            cost_model=learnt({1: 100}),
        )
    )
    running = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(handler.entered.wait, HANG_S)
    queued = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]  # waits of ~100, ~200 ms
    await asyncio.sleep(0)
    with pytest.raises(QueueWaitTooLong, match="max_queue_wait_ms = 250"):
        await batcher.submit(4)  # would wait ~300 ms
    handler.release.set()
    assert [r.result for r in await asyncio.gather(running, *queued)] == [2, 4, 6]
    await batcher.stop()


async def test_batches_run_on_whichever_executor_is_free_each_initialised_in_its_thread() -> None:
    handler = RecordingHandler()
    barrier = threading.Barrier(2, timeout=HANG_S)
    initialised: list[tuple[int, str]] = []

    def two_at_once(requests: list[int]) -> list[int]:
        barrier.wait()  # passes only when two batches are in the model at the same time
        return handler(requests)

    batcher = await started(
        DynamicBatcher(
            two_at_once,
            max_batch_size=1,
            max_batch_delay_ms=0,
            executors=2,
            executor_initializer=lambda index: initialised.append((index, threading.current_thread().name)),
        )
    )
    results = await asyncio.wait_for(asyncio.gather(batcher.submit(1), batcher.submit(2)), HANG_S)
    await batcher.stop()
    assert [r.result for r in results] == [2, 4]
    assert len(handler.threads) == 2
    assert sorted(initialised) == [(0, "etude-model-0"), (1, "etude-model-1")]


async def test_batches_measured_cheaper_than_a_hand_off_run_on_the_loop_others_in_the_thread() -> None:
    ran_in: dict[int, list[str]] = {1: [], 8: []}

    def handler(requests: list[int]) -> list[int]:
        if len(requests) == 8:  # batches of 8 compute for 5 ms, a batch of 1 nothing
            busy_until_s = time.perf_counter() + 0.005
            while time.perf_counter() < busy_until_s:
                pass
        ran_in[len(requests)].append(threading.current_thread().name)
        return requests

    batcher = await started(
        DynamicBatcher(handler, max_batch_size=8, max_batch_delay_ms=0, inline_below_us=1_000)
    )
    for _ in range(3):
        await batcher.submit(1)
        await asyncio.gather(*(batcher.submit(i) for i in range(8)))
    await batcher.stop()
    loop_thread = threading.current_thread().name
    # The first batch of 1 runs in the model thread (never measured); once measured cheap, on the loop.
    assert ran_in[1][0] != loop_thread and ran_in[1][1:] == [loop_thread, loop_thread]
    assert loop_thread not in ran_in[8]


async def test_a_batch_that_waits_long_though_cheap_in_cpu_stays_off_the_loop() -> None:
    ran_in: list[str] = []

    def waits_on_a_device(requests: list[int]) -> list[int]:
        time.sleep(0.05)  # no CPU, but 50 ms: inline it would block the loop
        ran_in.append(threading.current_thread().name)
        return requests

    batcher = await started(DynamicBatcher(waits_on_a_device, max_batch_delay_ms=0, inline_below_us=1_000))
    for _ in range(3):
        await batcher.submit(1)
    await batcher.stop()
    assert threading.current_thread().name not in ran_in
