"""The Kubernetes driver against a fake API server at the HTTP boundary of the official client:
what it sends, and how it reacts to ready, failed pods, timeouts, 409, 403 and cancellation."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etude.services.controller.drivers import kubernetes as k8s
from etude.services.controller.drivers import manifests
from etude.services.controller.drivers.kubernetes import (
    DeployConflict,
    DeployForbidden,
    KubernetesDeployError,
    KubernetesDriver,
    PodFailed,
)
from etude.services.controller.drivers.owner import CURRENT_OWNER, ExperimentOwner
from etude.services.controller.matrix import expand_trials
from etude.services.controller.validation import resolve
from etude.services.results.store import AsyncResultStore, LocalResultStore

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

SPEC = """
name: k8s
models: [{name: gru4rec}]
catalog_sizes: [10000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 7}
hardware: [{name: gpu-t4, device: cuda, replicas: 2}]
runtimes: [jit]
load: {target_rate_per_s: 10, ramp_duration_s: 1, hold_duration_s: 1}
target: kubernetes
"""


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with fake_api_server() as server:
        yield server


def _driver(fake: FakeApiServer, **options: Any) -> KubernetesDriver:
    return driver_on(fake, "registry.example/etude-cuda:1.2", **options)


def _trial() -> tuple[experiment_pb2.Trial, experiment_pb2.ExperimentSpec]:
    spec = resolve(parse_spec_text(SPEC))
    return expand_trials(spec)[0], spec


def _ready_after(polls: int) -> Any:
    seen = {"count": 0}

    def status(resource: str, stored: dict[str, Any]) -> dict[str, Any]:
        seen["count"] += 1
        if seen["count"] < polls:
            return {"replicas": stored["spec"].get("replicas", 1), "readyReplicas": 0}
        return {
            "replicas": stored["spec"].get("replicas", 1),
            "readyReplicas": stored["spec"].get("replicas", 1),
        }

    return status


def _assert_everything_deleted(fake: FakeApiServer) -> None:
    assert fake.objects == {}
    for request in fake.calls("DELETE", ""):
        assert request.body == {"propagationPolicy": "Background"}


async def test_ready_deployment_yields_the_headless_service_and_is_deleted_on_exit(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.status_of = _ready_after(polls=3)
    fake.log_text = '{"event": "serving"}\n'
    fake.pods_of = lambda instance: [pod(f"{instance}-abc", ready=True)]
    trial, spec = _trial()
    async with _driver(fake).inference_service(trial, spec, tmp_path) as endpoint:
        (deployment,) = [body for (resource, _), body in fake.objects.items() if resource == "deployments"]
        (service,) = [body for (resource, _), body in fake.objects.items() if resource == "services"]
        name = deployment["metadata"]["name"]
        assert endpoint == f"{name}.{NAMESPACE}.svc.cluster.local:50052"
    assert name.startswith("etude-inf-gru4rec") and len(name) <= 63
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 2
    # Selectors are the trial's own: another trial's pods never join its Service.
    assert deployment["spec"]["selector"]["matchLabels"][manifests.INSTANCE_LABEL] == name
    assert service["spec"]["selector"][manifests.INSTANCE_LABEL] == name
    assert service["spec"]["clusterIP"] == "None"
    pod_spec = deployment["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["ETUDE_MODEL"] == "gru4rec"
    assert env["ETUDE_CATALOG_SIZE"] == "10000"
    assert env["ETUDE_RUNTIME"] == "jit"
    assert env["ETUDE_DEVICE"] == "cuda"
    assert env["ETUDE_MAX_BATCH_SIZE"] == str(spec.batching.max_batch_size)
    assert env["ETUDE_PORT"] == "50052"
    assert container["image"] == "registry.example/etude-cuda:1.2"
    # The pod names its image in its own provenance (GetModelInfo's environment).
    assert env["ETUDE_IMAGE"] == "registry.example/etude-cuda:1.2"
    # The gpu-t4 overlay was applied: its node selector and GPU limit are in what was sent.
    assert pod_spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    _assert_everything_deleted(fake)
    assert (tmp_path / "inference.log").read_text() == '{"event": "serving"}\n'


async def test_crash_looping_pod_fails_the_trial_with_the_reason_and_its_log(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.status_of = lambda resource, stored: {"replicas": 2, "readyReplicas": 0}
    fake.log_text = "ValueError: catalog_size must be >= 1\n"
    fake.pods_of = lambda instance: [
        pod(
            f"{instance}-x",
            phase="Running",
            containerStatuses=[
                waiting_container("inference", "CrashLoopBackOff", "back-off 40s", exit_code=2)
            ],
        )
    ]
    trial, spec = _trial()
    with pytest.raises(PodFailed) as failure:
        async with _driver(fake).inference_service(trial, spec, tmp_path):
            pytest.fail("yielded an endpoint for a crashing pod")
    message = str(failure.value)
    assert "CrashLoopBackOff" in message and "last exit code 2" in message
    assert "ValueError: catalog_size must be >= 1" in message
    _assert_everything_deleted(fake)


async def test_image_pull_backoff_fails_the_trial_with_the_image_message(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.pods_of = lambda instance: [
        pod(
            f"{instance}-x",
            containerStatuses=[
                waiting_container(
                    "inference", "ImagePullBackOff", 'Back-off pulling image "registry.example/etude"'
                )
            ],
        )
    ]
    trial, spec = _trial()
    with pytest.raises(
        PodFailed, match=re.escape('ImagePullBackOff: Back-off pulling image "registry.example/etude"')
    ):
        async with _driver(fake).inference_service(trial, spec, tmp_path):
            pass
    _assert_everything_deleted(fake)


async def test_a_deployment_never_ready_times_out_saying_why_its_pods_wait(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    unschedulable = {
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    }  # fmt: skip
    fake.pods_of = lambda instance: [pod(f"{instance}-x", conditions=[unschedulable])]
    trial, spec = _trial()
    with pytest.raises(KubernetesDeployError, match=re.escape("not ready after 0.2 s")) as failure:
        async with _driver(fake, startup_timeout_s=0.2).inference_service(trial, spec, tmp_path):
            pass
    assert "Unschedulable 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in str(failure.value)
    _assert_everything_deleted(fake)


def _leftover(fake: FakeApiServer, managed: bool) -> str:
    trial, spec = _trial()
    name = manifests.object_name("etude-inf", trial.trial_id, f"{spec.name}/{trial.trial_id}")
    labels = dict(manifests.MANAGED_BY) if managed else {"team": "search"}
    fake.objects[("services", name)] = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        "spec": {"clusterIP": "None", "ports": [{"port": 50052}]},
    }  # fmt: skip
    return name


async def test_a_leftover_from_an_earlier_run_is_deleted_and_created_again(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    name = _leftover(fake, managed=True)
    fake.status_of = _ready_after(polls=1)
    trial, spec = _trial()
    async with _driver(fake).inference_service(trial, spec, tmp_path):
        assert fake.objects[("services", name)]["spec"]["selector"][manifests.INSTANCE_LABEL] == name
    posts = [r.path.rsplit("/", 1)[-1] for r in fake.requests if r.method in ("POST", "DELETE")]
    assert posts[:3] == ["services", name, "services"]  # 409, delete the leftover, create again
    _assert_everything_deleted(fake)


async def test_a_conflict_fails_clearly_when_replacing_is_not_allowed(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    name = _leftover(fake, managed=True)
    trial, spec = _trial()
    with pytest.raises(DeployConflict, match=f"kubectl delete services {name} -n {NAMESPACE}"):
        async with _driver(fake, on_conflict="fail").inference_service(trial, spec, tmp_path):
            pass
    assert fake.calls("POST", "deployments") == []


async def test_an_object_not_created_by_etude_is_never_replaced(fake: FakeApiServer, tmp_path: Path) -> None:
    name = _leftover(fake, managed=False)
    trial, spec = _trial()
    with pytest.raises(DeployConflict, match="not created by Etude"):
        async with _driver(fake).inference_service(trial, spec, tmp_path):
            pass
    assert fake.objects[("services", name)]["metadata"]["labels"] == {"team": "search"}
    assert fake.calls("DELETE", "services") == []


async def test_forbidden_names_the_missing_permission_and_cleans_up_what_was_created(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.refuse[("POST", "deployments")] = 403
    trial, spec = _trial()
    with pytest.raises(DeployForbidden) as failure:
        async with _driver(fake).inference_service(trial, spec, tmp_path):
            pass
    message = str(failure.value)
    assert "may not create deployments in namespace 'etude-test'" in message
    assert "verb 'create' on resource 'deployments' of API group apps" in message
    assert "cannot create resource" in message  # the API's own words
    _assert_everything_deleted(fake)  # the Service created before the refusal


async def test_cancelling_while_waiting_for_readiness_deletes_everything(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.pods_of = lambda instance: [pod(f"{instance}-x")]
    trial, spec = _trial()
    driver = _driver(fake, startup_timeout_s=60.0)

    async def deploy() -> None:
        async with driver.inference_service(trial, spec, tmp_path):
            pytest.fail("became ready")

    task = asyncio.create_task(deploy())
    assert await asyncio.to_thread(fake.polled.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.calls("DELETE", "deployments") and fake.calls("DELETE", "services")
    _assert_everything_deleted(fake)


async def test_loadgen_runs_as_a_job_reached_through_its_service_and_is_deleted(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.status_of = lambda resource, stored: {"active": 1}
    fake.pods_of = lambda instance: [pod(f"{instance}-pod", ready=True)]
    async with _driver(fake).loadgen_service(tmp_path) as endpoint:
        (job,) = [body for (resource, _), body in fake.objects.items() if resource == "jobs"]
        name = job["metadata"]["name"]
        assert endpoint == f"{name}.{NAMESPACE}.svc.cluster.local:50053"
        assert fake.objects[("services", name)]["spec"]["selector"][manifests.INSTANCE_LABEL] == name
        assert job["spec"]["template"]["metadata"]["labels"][manifests.INSTANCE_LABEL] == name
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.example/etude-cuda:1.2"
        assert {"name": "ETUDE_IMAGE", "value": "registry.example/etude-cuda:1.2"} in container["env"]
    # Background propagation: the API's default for a Job would orphan its pod.
    assert fake.calls("DELETE", "jobs")[0].body == {"propagationPolicy": "Background"}
    _assert_everything_deleted(fake)


async def test_the_workload_service_runs_as_a_deployment_reached_by_its_service_name_and_is_deleted(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.status_of = _ready_after(polls=2)
    fake.log_text = '{"event": "stream_started"}\n'
    fake.pods_of = lambda instance: [pod(f"{instance}-pod", ready=True)]
    async with _driver(fake).workload_service(tmp_path) as endpoint:
        (deployment,) = [body for (resource, _), body in fake.objects.items() if resource == "deployments"]
        name = deployment["metadata"]["name"]
        assert name.startswith("etude-workload-")
        # In-cluster DNS: the load generators reach it, the controller never needs to.
        assert endpoint == f"{name}.{NAMESPACE}.svc.cluster.local:50051"
        service = fake.objects[("services", name)]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"][manifests.INSTANCE_LABEL] == name
        assert deployment["spec"]["selector"]["matchLabels"][manifests.INSTANCE_LABEL] == name
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:2] == ["serve", "workload"]
        assert container["image"] == "registry.example/etude-cuda:1.2"
    _assert_everything_deleted(fake)
    assert (tmp_path / "workload.log").read_text() == '{"event": "stream_started"}\n'


async def test_a_failed_loadgen_job_fails_with_its_name(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.status_of = lambda resource, stored: {"failed": 1}
    with pytest.raises(PodFailed, match="load generator Job etude-test/etude-loadgen-"):
        async with _driver(fake).loadgen_service(tmp_path):
            pass
    _assert_everything_deleted(fake)


def test_hardware_options_map_to_the_overlay_named_after_them() -> None:
    available = manifests.overlays(manifests.kustomize_dir())
    assert available == ["cpu", "gpu-a100", "gpu-h100", "gpu-t4"]
    option = experiment_pb2.HardwareOption
    assert manifests.overlay_for(option(name="gpu-h100", device="cuda"), available) == "gpu-h100"
    assert manifests.overlay_for(option(name="gpu-t4-spot", device="cuda"), available) == "gpu-t4"
    assert manifests.overlay_for(option(name="local-cpu", device="cpu"), available) == "cpu"
    with pytest.raises(KubernetesDeployError, match="name the option after one of"):
        manifests.overlay_for(option(name="big-gpu", device="cuda"), available)


def test_object_names_are_dns_labels_distinct_per_experiment() -> None:
    long_id = "lightsans-c20000000-gpu-h100-compile-r12-with-a-very-long-suffix"
    first = manifests.object_name("etude-inf", long_id, f"a/{long_id}")
    second = manifests.object_name("etude-inf", long_id, f"b/{long_id}")
    assert first != second
    for name in (first, second):
        assert len(name) <= 63 and name[0].isalpha() and name[-1].isalnum()


def test_records_copied_out_of_the_pod_arrive_intact_and_leave_the_pod(tmp_path: Path) -> None:
    # The script the driver runs in the load generator's pod, run here for real.
    remote = tmp_path / "pod" / "run-1"
    remote.mkdir(parents=True)
    (remote / "records.csv").write_text("tick,status\n0,OK\n")
    (remote / "series.csv").write_text("tick\n0\n")
    archive = subprocess.run(
        [sys.executable, "-c", k8s._COPY_OUT_SCRIPT, str(remote)], check=True, capture_output=True, text=True
    ).stdout
    assert not remote.exists()
    k8s.extract_records(archive, tmp_path / "local")
    assert (tmp_path / "local" / "records.csv").read_text() == "tick,status\n0,OK\n"
    assert (tmp_path / "local" / "series.csv").read_text() == "tick\n0\n"


def test_the_target_flag_replaces_the_spec_target_before_validation(tmp_path: Path) -> None:
    from etude.services.controller.validation import load_spec

    from etude.spec import SpecError

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("target: kubernetes", ""))
    with pytest.raises(SpecError, match="the local target runs exactly one replica"):
        load_spec(path)
    assert load_spec(path, target="kubernetes").target == "kubernetes"
    path.write_text(SPEC)
    with pytest.raises(SpecError, match="the local target runs exactly one replica"):
        load_spec(path, target="local")


async def test_a_restarted_controller_deletes_what_its_experiment_left_and_nothing_else(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.status_of = lambda resource, stored: {"active": 1, "replicas": 2, "readyReplicas": 2}
    fake.pods_of = lambda instance: [pod(f"{instance}-pod", ready=True)]
    trial, spec = _trial()
    experiment_id = "k8s-20261130-120000-001"
    token = CURRENT_OWNER.set(ExperimentOwner(experiment_id, AsyncResultStore(LocalResultStore(tmp_path))))
    try:
        driver = _driver(fake)
        async with driver.loadgen_service(tmp_path), driver.inference_service(trial, spec, tmp_path):
            # The controller dies here: its objects stay behind (a copy, as teardown then runs).
            left_behind = dict(fake.objects)
    finally:
        CURRENT_OWNER.reset(token)
    assert len(left_behind) == 4
    for body in left_behind.values():
        assert body["metadata"]["labels"][manifests.EXPERIMENT_LABEL] == experiment_id
    fake.objects.update(left_behind)
    other = {"metadata": {"name": "etude-inf-other", "labels": {
        **manifests.MANAGED_BY, manifests.EXPERIMENT_LABEL: "other-20261130-120000-002"}}}  # fmt: skip
    not_ours = {"metadata": {"name": "etude-inf-mine", "labels": {manifests.EXPERIMENT_LABEL: experiment_id}}}
    fake.objects[("deployments", "etude-inf-other")] = other
    fake.objects[("deployments", "etude-inf-mine")] = not_ours

    stopped = await _driver(fake).stop_leftovers(experiment_id, [])

    assert sorted(fake.objects) == [("deployments", "etude-inf-mine"), ("deployments", "etude-inf-other")]
    assert len(stopped) == 4 and all(NAMESPACE in line for line in stopped)


def test_an_experiment_label_is_a_valid_label_value_whatever_the_id() -> None:
    assert manifests.experiment_label_value("fashion-20261130-120000-001") == "fashion-20261130-120000-001"
    for odd in ("Ünïcode id", "x" * 80, "-leading-dash"):
        value = manifests.experiment_label_value(odd)
        assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", value), value
    assert manifests.experiment_label_value("x" * 80) != manifests.experiment_label_value("x" * 81)
