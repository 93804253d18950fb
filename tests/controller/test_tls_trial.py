"""A controller configured with TLS runs its trials over TLS: it starts the inference service and
the load generator with its certificate and CA, calls them over TLS, the load generator calls the
inference service over TLS, and the trial's services refuse plaintext. Real processes."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from etude.services.controller.cli import make_driver
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import LocalResultStore

from etude import security
from etude.spec import parse_spec_dict
from etude.v1 import controller_pb2, recommender_pb2, recommender_pb2_grpc
from tests.pki import make_pki, write_pki


@pytest.fixture
def pem_files(tmp_path: Path) -> Iterator[dict[str, Path]]:
    yield write_pki(make_pki(), tmp_path)
    security.configure()  # this process's security back to none


async def _model_info_status(endpoint: str, client: security.ClientSecurity | None) -> grpc.StatusCode:
    if client is None:
        channel = grpc.aio.insecure_channel(endpoint)
    else:
        channel = security.open_channel(endpoint, security=client)
    async with channel:
        try:
            await recommender_pb2_grpc.RecommenderServiceStub(channel).GetModelInfo(
                recommender_pb2.GetModelInfoRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.slow
async def test_a_mutual_tls_controller_runs_its_trial_over_tls_and_plaintext_is_refused(
    tmp_path: Path, pem_files: dict[str, Path]
) -> None:
    settings = {
        "tls_cert": str(pem_files["cert"]), "tls_key": str(pem_files["key"]),
        "tls_ca": str(pem_files["ca"]), "tls_client_ca": str(pem_files["ca"]),
    }  # fmt: skip
    # As `etude serve controller --tls-cert ... --tls-ca ... --tls-client-ca ...` configures itself.
    server, client = security.from_flags(**settings)
    security.configure(server, client)
    driver = make_driver("local", argparse.Namespace(startup_timeout_s=120.0, **settings))
    assert isinstance(driver, LocalDriver)
    store = LocalResultStore(tmp_path / "results")
    spec = resolve(
        parse_spec_dict(
            {
                "name": "tls",
                "models": [{"name": "noop"}],
                "catalog_sizes": [100],
                "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
                "load": {"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": 2},
                "results": str(tmp_path / "results"),
            }
        )
    )
    experiment = new_experiment(spec, store)
    probes: list[asyncio.Future[list[grpc.StatusCode]]] = []

    async def probe(endpoint: str) -> list[grpc.StatusCode]:
        no_certificate = security.ClientSecurity(ca_pem=pem_files["ca"].read_bytes())
        return [
            await _model_info_status(endpoint, None),
            await _model_info_status(endpoint, no_certificate),
            await _model_info_status(endpoint, client),
        ]

    def on_event(event: controller_pb2.ExperimentEvent) -> None:
        if event.HasField("progress") and not probes:
            probes.append(asyncio.ensure_future(probe(dict(driver.endpoints())["inference"])))

    await ExperimentRunner(experiment, driver, store, on_event).run()

    assert experiment.state == controller_pb2.EXPERIMENT_STATE_SUCCEEDED, experiment.error
    summary = experiment.trials[0].summary
    # The load generator reached the inference service, which speaks mutual TLS only.
    assert summary.requests_ok > 0 and summary.requests_ok == summary.requests_sent
    plaintext, without_certificate, with_certificate = await probes[0]
    assert plaintext == grpc.StatusCode.UNAVAILABLE
    assert without_certificate == grpc.StatusCode.UNAVAILABLE
    assert with_certificate == grpc.StatusCode.OK


def test_a_tls_controller_without_a_ca_refuses_to_start_saying_why(pem_files: dict[str, Path]) -> None:
    args = argparse.Namespace(
        startup_timeout_s=1.0, tls_cert=str(pem_files["cert"]), tls_key=str(pem_files["key"]), tls_ca=None
    )
    with pytest.raises(SystemExit, match="--tls-cert needs --tls-ca"):
        make_driver("local", args)


def test_a_child_service_inherits_no_security_variable_of_its_parent(
    monkeypatch: pytest.MonkeyPatch, pem_files: dict[str, Path]
) -> None:
    from etude.services.controller.drivers import processes

    monkeypatch.setenv("ETUDE_AUTH_TOKEN_FILE", "/run/secrets/token")
    monkeypatch.setenv("ETUDE_PLAINTEXT_HEALTH_PORT", "50064")
    monkeypatch.setenv("ETUDE_TLS_CERT", str(pem_files["cert"]))
    monkeypatch.setenv("ETUDE_SEED", "7")
    inherited = processes.inherited_environment()
    assert not set(security.SECURITY_ENV) & set(inherited)
    assert inherited["ETUDE_SEED"] == "7"
