"""The kustomize base renders, and its probes and ports match the inference service's defaults."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from etude import defaults

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (the Kubernetes issue ships it)")
def test_base_renders_a_headless_service_and_a_probed_deployment() -> None:
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "deploy" / "kustomize" / "base")],  # type: ignore[list-item]
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(rendered)}
    # The workload service runs beside the inference service; the load generator is a Job.
    assert {kind for kind, _ in objects} == {"Deployment", "Service", "Job"}
    assert objects[("Service", "etude-inference")]["spec"]["clusterIP"] == "None"
    container = objects[("Deployment", "etude-inference")]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["grpc"]["port"] == defaults.INFERENCE_PORT
    assert container["ports"][0]["containerPort"] == defaults.INFERENCE_PORT
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["ETUDE_PORT"] == str(defaults.INFERENCE_PORT)
