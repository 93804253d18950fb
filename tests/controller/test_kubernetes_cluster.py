"""The Kubernetes driver against a real cluster: runs only when ETUDE_TEST_KUBECONFIG names a
kubeconfig (and ETUDE_TEST_IMAGE an image of Etude the cluster can pull), skips otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from etude.services.controller.drivers.kubernetes import KubernetesDriver
from etude.services.controller.matrix import expand_trials
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore

from etude.spec import parse_spec_text
from etude.v1 import experiment_pb2

KUBECONFIG = os.environ.get("ETUDE_TEST_KUBECONFIG")
pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="set ETUDE_TEST_KUBECONFIG to test against a real cluster"
)

SPEC = """
name: k8s-e2e
models: [{name: noop}]
catalog_sizes: [1000]
workload: {exponents: {alpha_length: 2.2, alpha_clicks: 1.8}, seed: 1}
hardware: [{name: cpu, device: cpu}]
load: {target_rate_per_s: 20, ramp_duration_s: 2, hold_duration_s: 2}
target: kubernetes
"""


def _driver() -> KubernetesDriver:
    return KubernetesDriver(
        kubeconfig=KUBECONFIG,
        namespace=os.environ.get("ETUDE_TEST_NAMESPACE") or None,
        image=os.environ.get("ETUDE_TEST_IMAGE", "etude:latest"),
        startup_timeout_s=float(os.environ.get("ETUDE_TEST_STARTUP_TIMEOUT_S", "300")),
    )


async def test_inference_deploys_until_ready_and_nothing_is_left_after(tmp_path: Path) -> None:
    driver = _driver()
    spec = resolve(parse_spec_text(SPEC))
    trial = expand_trials(spec)[0]
    async with driver.inference_service(trial, spec, tmp_path) as endpoint:
        assert endpoint.endswith(".svc.cluster.local:50052")
        name = endpoint.split(".", 1)[0]
        status = driver.apps.read_namespaced_deployment(name, driver.namespace).status
        assert status is not None and status.ready_replicas == 1
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as gone:
        driver.core.read_namespaced_service(name, driver.namespace)
    assert gone.value.status == 404
    assert (tmp_path / "inference.log").exists()


async def test_an_experiment_runs_end_to_end_and_its_records_come_back(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(resolve(parse_spec_text(SPEC)), store)
    await ExperimentRunner(experiment, _driver(), store).run()
    result = experiment.trials[0]
    assert result.state == experiment_pb2.TRIAL_STATE_SUCCEEDED, result.error
    trial_dir = tmp_path / experiment.experiment_id / "trials" / result.trial.trial_id
    assert (trial_dir / "records.csv").stat().st_size > 0
    assert result.summary.requests_ok > 0
