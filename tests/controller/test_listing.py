"""ListExperiments pages short summaries, newest first: every experiment of a large store exactly
once, bounded pages, and a bad page_size or page_token refused naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.experiments import ExperimentManager
from etude.services.controller.listing import InvalidPage, experiment_summary, page_of
from etude.services.controller.runner import new_experiment
from etude.services.controller.server import ControllerServicer
from etude.services.controller.validation import resolve
from etude.services.results.documents import save_experiment
from etude.services.results.store import LocalResultStore

from etude.serving import ServiceHost
from etude.spec import parse_spec_dict
from etude.v1 import controller_pb2, controller_pb2_grpc, experiment_pb2
from tests.controller.test_client_cli import etude

SPEC = resolve(
    parse_spec_dict(
        {
            "name": "many",
            "models": [{"name": "noop"}],
            "catalog_sizes": [100],
            "hardware": [
                {"name": "small", "device": "cpu", "monthly_cost_usd": 108},
                {"name": "big", "device": "cpu", "monthly_cost_usd": 268},
            ],
            "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
            "load": {"target_rate_per_s": 10, "ramp_duration_s": 1, "hold_duration_s": 1},
        }
    )
)


def finished_experiment(
    store: LocalResultStore, index: int, created_unix_ms: int
) -> controller_pb2.Experiment:
    experiment = new_experiment(SPEC, store)
    experiment.experiment_id = f"many-{index:04d}"
    experiment.created_unix_ms = created_unix_ms
    experiment.state = controller_pb2.EXPERIMENT_STATE_SUCCEEDED
    for result in experiment.trials:
        result.state = experiment_pb2.TRIAL_STATE_SUCCEEDED
        result.summary.requests_ok = 20
        result.slo_met = True
    return experiment


def fill_store(folder: Path, count: int) -> list[str]:
    """`count` finished experiments in a store; ids newest first. Some share a creation time."""
    store = LocalResultStore(folder)
    experiments = [finished_experiment(store, index, 1_000_000 + index // 3) for index in range(count)]
    for experiment in experiments:
        save_experiment(store, experiment)
    newest_first = sorted(experiments, key=lambda e: (e.created_unix_ms, e.experiment_id), reverse=True)
    return [experiment.experiment_id for experiment in newest_first]


@pytest.fixture
async def controller_over(tmp_path: Path) -> AsyncIterator[controller_pb2_grpc.ControllerServiceStub]:
    ids = fill_store(tmp_path / "results", 120)
    store = LocalResultStore(tmp_path / "results")
    manager = ExperimentManager(LocalDriver(startup_timeout_s=10), store=store)
    await manager.start()
    host = ServiceHost(
        ["etude.v1.ControllerService"],
        lambda server: controller_pb2_grpc.add_ControllerServiceServicer_to_server(
            ControllerServicer(manager), server
        ),
    )
    port = await host.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        stub.ids = ids  # type: ignore[attr-defined]
        yield stub
    await manager.stop()
    await host.stop(0)


async def test_paging_returns_every_experiment_once_newest_first(controller_over) -> None:
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = await controller_over.ListExperiments(
            controller_pb2.ListExperimentsRequest(page_size=50, page_token=token)
        )
        sizes.append(len(page.experiments))
        seen += [summary.experiment_id for summary in page.experiments]
        token = page.next_page_token
        if not token:
            break
    assert sizes == [50, 50, 20]
    assert seen == controller_over.ids


async def test_the_default_page_is_50_short_summaries(controller_over) -> None:
    page = await controller_over.ListExperiments(controller_pb2.ListExperimentsRequest())
    assert len(page.experiments) == 50 and page.next_page_token
    summary = page.experiments[0]
    assert summary.experiment_id == controller_over.ids[0] and summary.name == "many"
    assert summary.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED
    counts = (summary.trials, summary.trials_measured, summary.trials_slo_met, summary.trials_failed)
    assert counts == (2, 2, 2, 0)
    assert (summary.cheapest_hardware, summary.cheapest_monthly_cost_usd) == ("small", 108)
    assert summary.cheapest_trial_id == "noop-c100-small-eager"
    # A summary, not the experiment: its size does not grow with the trials' results.
    assert page.ByteSize() < 50 * 400


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_token": "garbage!"}, "page_token"),
        ({"page_token": "djE6bm90LWEtbnVtYmVyOng="}, "page_token"),  # "v1:not-a-number:x"
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
    ],
)
async def test_a_bad_page_request_is_invalid_argument_naming_the_field(
    controller_over, request_fields: dict, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await controller_over.ListExperiments(controller_pb2.ListExperimentsRequest(**request_fields))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(f"{field}: ")


def test_an_experiment_submitted_between_pages_neither_repeats_nor_shifts_them(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path)
    experiments = [finished_experiment(store, index, 1000 + index) for index in range(5)]
    first = page_of(experiments, 2, "")
    experiments.append(finished_experiment(store, 99, 5000))
    second = page_of(experiments, 2, first.next_page_token)
    third = page_of(experiments, 2, second.next_page_token)
    listed = [s.experiment_id for page in (first, second, third) for s in page.experiments]
    assert listed == ["many-0004", "many-0003", "many-0002", "many-0001", "many-0000"]
    assert not third.next_page_token


def test_no_cheapest_option_without_a_price_or_a_met_slo(tmp_path: Path) -> None:
    experiment = finished_experiment(LocalResultStore(tmp_path), 1, 1)
    experiment.trials[0].slo_met = False
    experiment.trials[1].trial.hardware.monthly_cost_usd = 0
    assert not experiment_summary(experiment).cheapest_trial_id
    with pytest.raises(InvalidPage):
        page_of([experiment], 0, "bm9wZQ==")


async def test_etude_list_pages_through_every_experiment(child_service, tmp_path: Path) -> None:
    ids = fill_store(tmp_path / "results", 60)
    async with child_service("controller", ["--results", str(tmp_path / "results")]) as endpoint:
        code, out, err = await etude("list", "--controller", endpoint)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["experiment", "state", "trials"]
    assert [line.split()[0] for line in lines[1:]] == ids
    assert "small $108/month" in lines[1]
