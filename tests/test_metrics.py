"""Prometheus can scrape every service: `--metrics-port` serves /metrics over HTTP, and the
services' own `etude_*` metrics move with the requests, batches, runs and experiments they serve."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from etude.spec import parse_spec_dict
from etude.v1 import (
    controller_pb2,
    controller_pb2_grpc,
    loadgen_pb2,
    loadgen_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    workload_pb2,
)

SERVICE_FLAGS = {
    "workload": [],
    "inference": ["--model", "noop", "--catalog-size", "100"],
    "loadgen": [],
    "controller": ["--results", "{tmp}/results"],
}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


@pytest.mark.parametrize("service", sorted(SERVICE_FLAGS))
async def test_every_service_serves_its_metrics_over_http(child_service, tmp_path: Path, service: str):
    port_file = tmp_path / "metrics-port"
    flags = [flag.format(tmp=tmp_path) for flag in SERVICE_FLAGS[service]]
    async with child_service(service, [*flags, "--metrics-port", "0", "--metrics-port-file", str(port_file)]):
        text = await asyncio.to_thread(_scrape, int(port_file.read_text()))
    build_info = [line for line in text.splitlines() if line.startswith("etude_build_info{")]
    assert len(build_info) == 1 and build_info[0].endswith(" 1.0")
    assert f'service="{service}"' in build_info[0] and 'version="0.1.0"' in build_info[0]
    # The process collector: what the service costs in CPU and memory.
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _scrape_metrics(port_file: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return _samples(await asyncio.to_thread(lambda: _scrape(int(port_file.read_text()))))


def _metrics_flags(port_file: Path) -> list[str]:
    return ["--metrics-port", "0", "--metrics-port-file", str(port_file)]


async def test_inference_metrics_count_the_requests_batches_and_refusals_it_served(
    child_service, tmp_path: Path
) -> None:
    port_file = tmp_path / "inference-metrics-port"
    flags = [
        "--model",
        "noop",
        "--catalog-size",
        "100",
        "--max-batch-delay-ms",
        "20",
        *_metrics_flags(port_file),
    ]
    async with child_service("inference", flags) as endpoint, grpc.aio.insecure_channel(endpoint) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        before = await _scrape_metrics(port_file)
        # Concurrent requests, so that the batcher forms batches of several.
        responses = await asyncio.gather(
            *(
                stub.Recommend(recommender_pb2.RecommendRequest(session_id=f"s{i}", item_ids=[1 + i], k=5))
                for i in range(24)
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Recommend(recommender_pb2.RecommendRequest(session_id="bad", item_ids=[101], k=5))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        after = await _scrape_metrics(port_file)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    # Each batch answers every one of its requests with its size: sum(1 / size) is the batches run.
    batches = round(sum(1 / response.timing.batch_size for response in responses))
    assert batches < 24  # some did share a batch
    assert moved("etude_inference_batch_size_count") == batches
    assert moved("etude_inference_batch_size_sum") == 24
    assert moved("etude_inference_request_latency_seconds_count") == 24
    assert moved("etude_inference_queue_wait_seconds_count") == 24
    # Every request waited for its batch to fill (up to 20 ms) and was answered after that.
    queued_s = sum(response.timing.queue_us for response in responses) / 1e6
    assert moved("etude_inference_queue_wait_seconds_sum") == pytest.approx(queued_s, abs=24e-6)
    assert moved("etude_inference_request_latency_seconds_sum") >= queued_s
    assert moved("etude_inference_executor_busy_seconds_total", executor="0") > 0
    assert moved("etude_inference_refusals_total", reason="invalid_argument") == 1
    assert after[("etude_inference_queue_depth", ())] == 0


async def test_loadgen_metrics_match_the_summary_of_the_run_it_served(child_service, tmp_path: Path) -> None:
    inference_flags = ["--model", "noop", "--catalog-size", "50"]
    port_file = tmp_path / "loadgen-metrics-port"
    async with (
        child_service("inference", inference_flags) as target,
        child_service("loadgen", _metrics_flags(port_file)) as endpoint,
        grpc.aio.insecure_channel(endpoint) as channel,
    ):
        spec = loadgen_pb2.LoadSpec(
            target=target,
            profile=loadgen_pb2.LoadProfile(
                target_rate_per_s=20.0, ramp_duration_s=1, hold_duration_s=1, k=5
            ),
            workload=workload_pb2.WorkloadSpec(
                catalog_size=50, exponents=workload_pb2.PowerLawExponents(alpha_length=2.0, alpha_clicks=1.5)
            ),
            run_id="metrics",
        )
        updates = [update async for update in loadgen_pb2_grpc.LoadGeneratorServiceStub(channel).Run(spec)]
        metrics = await _scrape_metrics(port_file)
    summary = updates[-1].summary
    assert summary.requests_sent > 0
    assert metrics[("etude_loadgen_requests_sent_total", ())] == summary.requests_sent
    assert metrics[("etude_loadgen_requests_not_sent_total", ())] == summary.requests_not_sent
    assert metrics[("etude_loadgen_responses_total", (("status", "OK"),))] == summary.requests_ok
    errors = {
        dict(labels)["status"]: value
        for (name, labels), value in metrics.items()
        if name == "etude_loadgen_responses_total" and dict(labels)["status"] != "OK"
    }
    assert errors == dict(summary.errors_by_status)


async def test_controller_metrics_count_its_experiments_by_state(child_service, tmp_path: Path) -> None:
    port_file = tmp_path / "controller-metrics-port"
    flags = ["--results", str(tmp_path / "results"), *_metrics_flags(port_file)]
    async with child_service("controller", flags) as endpoint, grpc.aio.insecure_channel(endpoint) as channel:
        before = await _scrape_metrics(port_file)
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        spec = parse_spec_dict(TINY_EXPERIMENT)
        submitted = await stub.SubmitExperiment(controller_pb2.SubmitExperimentRequest(spec=spec))
        async for _ in stub.WatchExperiment(
            controller_pb2.WatchExperimentRequest(experiment_id=submitted.experiment_id)
        ):
            pass
        finished = await stub.GetExperiment(
            controller_pb2.GetExperimentRequest(experiment_id=submitted.experiment_id)
        )
        after = await _scrape_metrics(port_file)
    assert finished.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED
    states = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
    assert {
        state: before[("etude_controller_experiments", (("state", state),))] for state in states
    } == dict.fromkeys(states, 0.0)
    assert {state: after[("etude_controller_experiments", (("state", state),))] for state in states} == {
        **dict.fromkeys(states, 0.0),
        "succeeded": 1.0,
    }


TINY_EXPERIMENT = {
    "name": "metrics",
    "models": [{"name": "noop"}],
    "catalog_sizes": [100],
    "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
    "runtimes": ["eager"],
    "load": {"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": 1},
}
