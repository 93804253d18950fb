"""The batch plan: how the waiting queue is expected to run, for admission by deadline."""

from __future__ import annotations

import pytest
from etude.services.inference.admission import BatchPlan
from etude.services.inference.cost_model import BatchCostModel

MS = 1_000_000


def plan_costing(ms_per_request: float, max_batch_size: int = 8, headroom: float = 0.0) -> BatchPlan:
    """A plan whose batches cost `ms_per_request` x size (two learnt points make it linear)."""
    model = BatchCostModel()
    model.observe(1, round(ms_per_request * MS))
    model.observe(64, round(64 * ms_per_request * MS))
    return BatchPlan(model, max_batch_size, headroom)


def admit(
    plan: BatchPlan, deadline_ns: int | None, free_at_ns: list[float] | None = None
) -> tuple[float, int]:
    forecast = plan.forecast(free_at_ns or [0.0], deadline_ns)
    plan.add(forecast, deadline_ns)
    return forecast.finish_ns, forecast.batch_size


def test_requests_join_the_last_batch_until_it_is_full() -> None:
    plan = plan_costing(10, max_batch_size=3)
    assert [admit(plan, None) for _ in range(4)] == [
        (10 * MS, 1),
        (20 * MS, 2),
        (30 * MS, 3),
        (30 * MS + 10 * MS, 1),  # a new batch, after the full one
    ]


def test_a_request_the_last_batchs_earliest_deadline_cannot_afford_starts_a_new_batch() -> None:
    plan = plan_costing(10)
    admit(plan, 25 * MS)  # affords a batch of 2 (20 ms), not of 3
    admit(plan, 1_000 * MS)
    finish_ns, size = admit(plan, 1_000 * MS)
    assert (finish_ns, size) == (20 * MS + 10 * MS, 1)


def test_headroom_is_kept_against_the_earliest_deadline() -> None:
    plan = plan_costing(10, headroom=0.5)
    admit(plan, 30 * MS)  # a batch of 2 costs 20 ms, 30 ms with the headroom: just affordable
    assert admit(plan, None)[1] == 2
    assert admit(plan, None)[1] == 1


def test_planned_batches_are_list_scheduled_on_the_executors() -> None:
    plan = plan_costing(10, max_batch_size=1)
    # Two executors, one free now and one in 5 ms: batches of 10 ms alternate between them.
    finishes = [admit(plan, None, [0.0, 5 * MS])[0] for _ in range(4)]
    assert finishes == [10 * MS, 15 * MS, 20 * MS, 25 * MS]


def test_requests_leaving_the_queue_leave_the_plan() -> None:
    plan = plan_costing(10, max_batch_size=2)
    for _ in range(3):
        admit(plan, None)
    for _ in range(2):
        plan.remove_first()
    assert plan.forecast([0.0], None).finish_ns == pytest.approx(20 * MS)  # joins the one left
    plan.clear()
    assert plan.forecast([0.0], None).finish_ns == pytest.approx(10 * MS)


def test_a_very_deep_queue_of_small_batches_is_forecast_in_bounded_time() -> None:
    plan = plan_costing(1, max_batch_size=1)
    for _ in range(5_000):
        admit(plan, None)
    # 5,000 batches of 1 ms ahead on one executor (most of them spread evenly): ~5 s.
    assert plan.forecast([0.0], None).finish_ns == pytest.approx(5_001 * MS)
