"""A trial with catalog shards on the Kubernetes target, against the fake API server: a StatefulSet
of shards behind its own headless Service, the router listing every shard's stable name, all of
it deleted with the trial and by the leftovers cleanup, and a failing shard named in the error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etude.services.controller.drivers import manifests
from etude.services.controller.drivers.kubernetes import KubernetesDriver, PodFailed
from etude.services.controller.drivers.owner import CURRENT_OWNER, ExperimentOwner
from etude.services.controller.matrix import expand_trials
from etude.services.controller.validation import resolve
from etude.services.results.store import AsyncResultStore, LocalResultStore

from etude import defaults
from etude.spec import parse_spec_text
from etude.v1 import experiment_pb2
from tests.controller.kubernetes_fake import (
    NAMESPACE,
    FakeApiServer,
    driver_on,
    fake_api_server,
    pod,
    waiting_container,
)

SHARDS = 3
SPEC = f"""
name: k8s-shards
models: [{{name: gru4rec}}]
catalog_sizes: [30000]
workload: {{exponents: {{alpha_length: 2.2, alpha_clicks: 1.8}}, seed: 7}}
hardware: [{{name: cpu, device: cpu, catalog_shards: {SHARDS}, shard_strategy: popular, cpu_threads: 2}}]
runtimes: [eager]
load: {{target_rate_per_s: 10, ramp_duration_s: 1, hold_duration_s: 1}}
target: kubernetes
"""


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with fake_api_server() as server:
        yield server


def _driver(fake: FakeApiServer, **options: Any) -> KubernetesDriver:
    return driver_on(fake, "registry.example/etude:1.2", **options)


def _trial() -> tuple[experiment_pb2.Trial, experiment_pb2.ExperimentSpec]:
    spec = resolve(parse_spec_text(SPEC))  # the kubernetes target takes catalog shards
    return expand_trials(spec)[0], spec


def _all_ready(resource: str, stored: dict[str, Any]) -> dict[str, Any]:
    replicas = stored["spec"].get("replicas", 1)
    return {"replicas": replicas, "readyReplicas": replicas, "active": 1}


def _pods_by_ordinal(instance: str) -> list[dict[str, Any]]:
    """A StatefulSet's pods are NAME-0..NAME-(N-1); a Deployment's one pod NAME-abc."""
    if instance.startswith("etude-shd-"):
        return [pod(f"{instance}-{ordinal}", ready=True) for ordinal in range(SHARDS)]
    return [pod(f"{instance}-abc", ready=True)]


def _stored(fake: FakeApiServer, resource: str) -> list[dict[str, Any]]:
    return [body for (kind, _), body in fake.objects.items() if kind == resource]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


async def test_a_sharded_trial_runs_its_shards_as_a_statefulset_and_the_router_lists_every_one(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.status_of = _all_ready
    fake.pods_of = _pods_by_ordinal
    fake.log_text = '{"event": "shard_built"}\n'
    trial, spec = _trial()
    async with _driver(fake).inference_service(trial, spec, tmp_path) as endpoint:
        (statefulset,) = _stored(fake, "statefulsets")
        (router,) = _stored(fake, "deployments")
        name = statefulset["metadata"]["name"]
        shard_service = fake.objects[("services", name)]
        router_name = router["metadata"]["name"]
        assert endpoint == f"{router_name}.{NAMESPACE}.svc.cluster.local:{defaults.INFERENCE_PORT}"
    # Names: trial-unique, and short enough for the StatefulSet's controller-revision-hash label.
    assert name.startswith("etude-shd-gru4rec") and len(name) <= manifests.STATEFULSET_NAME_MAX
    assert statefulset["metadata"]["namespace"] == NAMESPACE
    labels = statefulset["metadata"]["labels"]
    assert labels[manifests.INSTANCE_LABEL] == name
    assert labels["app.kubernetes.io/managed-by"] == "etude-controller"
    spec_of_set = statefulset["spec"]
    assert spec_of_set["replicas"] == SHARDS
    assert spec_of_set["serviceName"] == name  # pods get NAME-i.NAME.NAMESPACE.svc names
    assert spec_of_set["podManagementPolicy"] == "Parallel"
    assert spec_of_set["selector"]["matchLabels"][manifests.INSTANCE_LABEL] == name
    assert spec_of_set["template"]["metadata"]["labels"][manifests.INSTANCE_LABEL] == name
    # Its own headless Service, selecting this trial's shards only.
    assert shard_service["spec"]["clusterIP"] == "None"
    assert shard_service["spec"]["selector"][manifests.INSTANCE_LABEL] == name
    assert shard_service["metadata"]["labels"][manifests.INSTANCE_LABEL] == name
    (container,) = spec_of_set["template"]["spec"]["containers"]
    assert container["args"][:2] == ["serve", "shard"]
    assert container["image"] == "registry.example/etude:1.2"
    env = _env(container)
    # Each pod takes its shard index from its ordinal (its hostname NAME-i).
    assert env["ETUDE_SHARD"] == f"ordinal/{SHARDS}"
    assert env["ETUDE_STRATEGY"] == "popular"
    assert env["ETUDE_MODEL"] == "gru4rec" and env["ETUDE_CATALOG_SIZE"] == "30000"
    assert env["ETUDE_SEED"] == "7" and env["ETUDE_EMBEDDING_DIM"] == str(trial.embedding_dim)
    assert env["ETUDE_POPULARITY_SEED"] == "7" and env["ETUDE_POPULARITY_ALPHA_CLICKS"] == "1.8"
    assert env["ETUDE_THREADS"] == "2" and env["ETUDE_IMAGE"] == "registry.example/etude:1.2"
    # The router: the same model, catalog and seed, and every shard's stable DNS name in order.
    router_env = _env(router["spec"]["template"]["spec"]["containers"][0])
    assert router_env["ETUDE_CATALOG_SHARDS"].split(",") == [
        f"{name}-{i}.{name}.{NAMESPACE}.svc.cluster.local:{defaults.SHARD_PORT}" for i in range(SHARDS)
    ]
    assert router_env["ETUDE_MODEL"] == "gru4rec" and router_env["ETUDE_SEED"] == "7"
    assert router_env["ETUDE_CATALOG_SIZE"] == "30000"
    # The shards were created and ready before the router was created.
    order = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.requests if r.method in ("POST", "GET")]
    first_router_post = order.index(("POST", "deployments"))
    assert ("POST", "statefulsets") in order[:first_router_post]
    assert ("GET", name) in order[:first_router_post]
    # Deleted with the trial (router first), each shard's log kept under its ordinal.
    assert fake.objects == {}
    deleted = [r.path.rsplit("/", 1)[-1] for r in fake.calls("DELETE", "")]
    assert deleted == [router_name, router_name, name, name]
    assert all(r.body == {"propagationPolicy": "Background"} for r in fake.calls("DELETE", ""))
    for log in ("shard.log", "shard-1.log", "shard-2.log", "inference.log"):
        assert (tmp_path / log).read_text() == '{"event": "shard_built"}\n'


async def test_a_crash_looping_shard_fails_the_trial_naming_the_shard_and_nothing_is_left(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.status_of = lambda resource, stored: {"replicas": SHARDS, "readyReplicas": 2}
    fake.log_text = "etude serve shard: shard: I must be in 0..2\n"

    def pods(instance: str) -> list[dict[str, Any]]:
        crashing = pod(
            f"{instance}-1",
            phase="Running",
            containerStatuses=[waiting_container("shard", "CrashLoopBackOff", "back-off 20s", exit_code=1)],
        )
        return [pod(f"{instance}-0", ready=True), crashing, pod(f"{instance}-2", ready=True)]

    fake.pods_of = pods
    trial, spec = _trial()
    with pytest.raises(PodFailed) as failure:
        async with _driver(fake).inference_service(trial, spec, tmp_path):
            pytest.fail("yielded an endpoint with a crashing shard")
    message = str(failure.value)
    assert f"catalog shards of trial {trial.trial_id}" in message
    assert f"shard 1 of {SHARDS}: pod etude-shd-" in message
    assert "CrashLoopBackOff" in message and "last exit code 1" in message
    assert "I must be in 0..2" in message  # the shard's own log
    assert fake.calls("POST", "deployments") == []  # no router without its shards
    assert fake.objects == {}


async def test_a_shard_lost_during_the_load_is_a_lost_service(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.status_of = _all_ready
    fake.pods_of = _pods_by_ordinal
    trial, spec = _trial()
    driver = _driver(fake)
    async with driver.inference_service(trial, spec, tmp_path):
        lost = asyncio.create_task(driver.service_lost())
        await asyncio.sleep(0.05)
        assert not lost.done()

        def shard_2_gone(instance: str) -> list[dict[str, Any]]:
            return [p for p in _pods_by_ordinal(instance) if not p["metadata"]["name"].endswith("-2")]

        fake.pods_of = shard_2_gone
        reason = await asyncio.wait_for(lost, 5)
    assert reason.startswith(f"catalog shards of trial {trial.trial_id}")
    assert "-2 is gone" in reason


async def test_a_restarted_controller_deletes_the_shards_its_experiment_left(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.status_of = _all_ready
    fake.pods_of = _pods_by_ordinal
    trial, spec = _trial()
    experiment_id = "k8s-shards-20261130-120000-001"
    token = CURRENT_OWNER.set(ExperimentOwner(experiment_id, AsyncResultStore(LocalResultStore(tmp_path))))
    try:
        async with _driver(fake).inference_service(trial, spec, tmp_path):
            # The controller dies here: its objects stay behind (a copy, as teardown then runs).
            left_behind = dict(fake.objects)
    finally:
        CURRENT_OWNER.reset(token)
    assert sorted(kind for kind, _ in left_behind) == ["deployments", "services", "services", "statefulsets"]
    for body in left_behind.values():
        assert body["metadata"]["labels"][manifests.EXPERIMENT_LABEL] == experiment_id
    fake.objects.update(left_behind)

    stopped = await _driver(fake).stop_leftovers(experiment_id, [])

    assert fake.objects == {}
    assert len(stopped) == 4
    assert any(line.startswith(f"StatefulSet {NAMESPACE}/etude-shd-") for line in stopped)
