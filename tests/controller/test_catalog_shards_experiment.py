"""catalog_shards on a hardware option: validated up front, and the local driver deploys N shard
processes plus a router in front of them, all stopped with the trial."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.matrix import expand_trials
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore

from etude.spec import SpecError, parse_spec_text
from etude.v1 import controller_pb2, recommender_pb2, recommender_pb2_grpc

SPEC = """
name: sharded
models: [{name: gru4rec}]
catalog_sizes: [20000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 7}
hardware: [{name: cpu-sharded, device: cpu, catalog_shards: 2, shard_strategy: popular}]
load: {target_rate_per_s: 20, ramp_duration_s: 1, hold_duration_s: 1}
"""


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ("shard_strategy: popular", "hardware[0].shard_strategy", "only with catalog_shards >= 2"),
        ("catalog_shards: 2, shard_strategy: modulo", "hardware[0].shard_strategy", "is not one of"),
        ("catalog_shards: 65", "hardware[0].catalog_shards", "must be in"),
    ],
)
def test_bad_shard_options_are_refused_naming_the_field(change: str, field: str, reason: str) -> None:
    text = SPEC.replace("catalog_shards: 2, shard_strategy: popular", change)
    with pytest.raises(SpecError, match=reason) as refused:
        resolve(parse_spec_text(text))
    assert refused.value.field == field


def test_models_with_their_own_heads_are_refused_when_sharded() -> None:
    with pytest.raises(SpecError, match="core_scorer") as refused:
        resolve(parse_spec_text(SPEC.replace("{name: gru4rec}", "{name: core}")))
    assert refused.value.field == "hardware[0].catalog_shards"


@pytest.mark.slow
async def test_local_driver_serves_a_sharded_trial_through_a_router_and_stops_every_shard(
    tmp_path: Path,
) -> None:
    spec = resolve(parse_spec_text(SPEC))
    trial = expand_trials(spec)[0]
    driver = LocalDriver(startup_timeout_s=120, grace_s=2)
    async with driver.inference_service(trial, spec, tmp_path) as endpoint:
        services = sorted(service for service, _ in driver.running())
        assert services == ["inference", "shard", "shard"]
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            info = await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest())
            answer = await stub.Recommend(recommender_pb2.RecommendRequest(item_ids=[3, 4], k=5), timeout=10)
    assert info.details["shard_strategy"] == "popular" and len(info.details["catalog_shards"].split(",")) == 2
    assert len(answer.item_ids) == 5 and answer.timing.shard_fanout_us > 0
    assert driver.running() == []
    assert (tmp_path / "shard.log").exists() and (tmp_path / "shard-1.log").exists()


@pytest.mark.slow
async def test_an_experiment_records_the_memory_each_server_measured_and_reports_it(tmp_path: Path) -> None:
    text = SPEC.replace(
        "hardware: [{name: cpu-sharded", "hardware: [{name: cpu, device: cpu}, {name: cpu-sharded"
    )
    spec = resolve(parse_spec_text(text))
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(spec, store)
    await ExperimentRunner(
        experiment, LocalDriver(startup_timeout_s=120, grace_s=2), store, lambda _: None
    ).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    one, sharded = experiment.trials
    assert [m.server for m in one.server_memory] == ["inference"]
    assert [m.server for m in sharded.server_memory] == ["router", "shard 0/2", "shard 1/2"]
    for memory in [*one.server_memory, *sharded.server_memory]:
        assert 0 < memory.startup_resident_bytes < memory.peak_resident_bytes
        assert memory.resident_bytes <= memory.peak_resident_bytes
    assert one.server_memory[0].rows_held == 20_001
    # Popular: each shard holds its own half and the other's hot items.
    assert sum(m.rows_held for m in sharded.server_memory[1:]) > 20_000
    report = (tmp_path / experiment.experiment_id / "report.md").read_text()
    assert "### Memory per server (measured)" in report and "| shard 1/2 |" in report
