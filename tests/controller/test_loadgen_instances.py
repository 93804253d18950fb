"""Several load generators per trial (spec.loadgen_instances): through the local driver for real,
and the Kubernetes driver's objects for each against the fake API server."""

from __future__ import annotations

import csv
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from etude.services.controller.drivers import kubernetes as k8s
from etude.services.controller.drivers import manifests
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore
from kubernetes import client

from etude.spec import parse_spec_text
from etude.v1 import controller_pb2, experiment_pb2
from tests.controller.kubernetes_fake import FakeApiServer, fake_api_server, pod

SPEC = """
name: two-loadgens
models: [{name: noop}]
catalog_sizes: [1000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 3}
runtimes: [eager]
load: {target_rate_per_s: 20, ramp_duration_s: 1, hold_duration_s: 3, k: 10}
slo: {percentile: 90, latency_ms: 1000}
loadgen_instances: 2
"""


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
async def test_two_local_loadgens_each_send_half_and_their_records_are_merged(tmp_path: Path) -> None:
    spec = resolve(parse_spec_text(SPEC))
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(spec, store)
    events: list[controller_pb2.ExperimentEvent] = []
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store, events.append).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    (result,) = experiment.trials
    assert result.state == experiment_pb2.TRIAL_STATE_SUCCEEDED, result.error
    root = tmp_path / experiment.experiment_id
    trial_dir = root / "trials" / result.trial.trial_id
    summary = result.summary
    instance_summaries = [
        json.loads((trial_dir / f"loadgen-{i}" / "summary.json").read_text()) for i in (0, 1)
    ]
    assert [s["run_id"] for s in instance_summaries] == [
        f"{result.trial.trial_id}#0",
        f"{result.trial.trial_id}#1",
    ]
    sent = [int(s["requests_sent"]) for s in instance_summaries]
    # Ramp 1 s to 20/s then hold 3 s: 70 requests offered in all, about half by each.
    assert summary.requests_offered == pytest.approx(70, abs=10)
    assert summary.requests_sent == sum(sent)
    for part in sent:
        assert part == pytest.approx(summary.requests_sent / 2, abs=5)

    records = _read(trial_dir / "records.csv")
    assert len(records) == summary.requests_sent == summary.requests_ok
    intended = [int(row["intended_send_ns"]) for row in records]
    assert intended == sorted(intended)
    assert sum(row["session_id"].endswith("#1") for row in records) == sent[1]
    series = _read(trial_dir / "series.csv")
    assert len(series) == 4
    assert sum(int(row["sent"]) for row in series) == summary.requests_sent
    assert float(series[-1]["target_rate_per_s"]) == pytest.approx(20)
    stored = json.loads((trial_dir / "summary.json").read_text())
    assert stored["run_id"] == result.trial.trial_id
    assert int(stored["latency_from_intended"]["count"]) == summary.requests_ok
    assert result.slo_met, result.slo_verdict

    # One progress line per tick, with both instances' requests in it.
    progress = [event.progress for event in events if event.HasField("progress")]
    assert [p.tick for p in progress] == [0, 1, 2, 3]
    assert {p.run_id for p in progress} == {result.trial.trial_id}
    assert sum(p.sent for p in progress) == summary.requests_sent
    # Each instance logged to a file of its own.
    assert (root / "logs" / "loadgen.log").exists() and (root / "logs" / "loadgen-1.log").exists()


NAMESPACE = "etude-test"


def _driver(fake: FakeApiServer) -> k8s.KubernetesDriver:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{fake.port}"
    return k8s.KubernetesDriver(
        api_client=client.ApiClient(configuration),
        namespace=NAMESPACE,
        startup_timeout_s=5.0,
        poll_interval_s=0.01,
        loadgen_access="service",
    )


async def test_kubernetes_runs_each_loadgen_as_its_own_job_and_deletes_them_all(tmp_path: Path) -> None:
    with fake_api_server() as fake:
        fake.status_of = lambda resource, stored: {"active": 1}
        fake.pods_of = lambda instance: [pod(f"{instance}-pod", ready=True)]
        fake.log_text = "loadgen up\n"
        driver = _driver(fake)
        copied: list[tuple[str, str]] = []

        def copy_out(pod_name: str, remote: str) -> str:
            copied.append((pod_name, remote))
            return ""

        driver._exec_copy_out = copy_out  # type: ignore[method-assign, assignment]
        async with AsyncExitStack() as stack:
            endpoints = [
                await stack.enter_async_context(driver.loadgen_service(tmp_path, instance=index))
                for index in (0, 1)
            ]
            jobs: dict[str, Any] = {
                name: body for (resource, name), body in fake.objects.items() if resource == "jobs"
            }
            assert len(jobs) == 2
            assert sorted(endpoints) == sorted(f"{name}.{NAMESPACE}.svc.cluster.local:50053" for name in jobs)
            for name in jobs:
                assert fake.objects[("services", name)]["spec"]["selector"][manifests.INSTANCE_LABEL] == name
            # Each instance's records come out of its own pod.
            for index in (0, 1):
                async with driver.loadgen_records(tmp_path / f"loadgen-{index}", instance=index):
                    pass
            job_of = [endpoint.split(".")[0] for endpoint in endpoints]
            assert [pod_name for pod_name, _ in copied] == [f"{job_of[0]}-pod", f"{job_of[1]}-pod"]
        assert fake.objects == {}
        assert len(fake.calls("DELETE", "jobs")) == 2 and len(fake.calls("DELETE", "services")) == 2
        assert (tmp_path / "loadgen.log").read_text() == "loadgen up\n"
        assert (tmp_path / "loadgen-1.log").read_text() == "loadgen up\n"


def test_a_negative_instance_count_is_refused_naming_the_field() -> None:
    from etude.spec import SpecError

    with pytest.raises(SpecError, match="loadgen_instances"):
        resolve(parse_spec_text(SPEC.replace("loadgen_instances: 2", "loadgen_instances: -1")))
    assert resolve(parse_spec_text(SPEC.replace("loadgen_instances: 2", ""))).loadgen_instances == 1
