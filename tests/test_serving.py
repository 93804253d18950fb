"""Every service is hosted the same way: health, reflection, graceful drain, env-var options."""

from __future__ import annotations

import argparse
import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from etude.config import apply_env_defaults
from etude.serving import ServiceHost

SLOW_METHOD = "/test.Slow/Call"


def _register_slow(server: grpc.aio.Server) -> None:
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0.5)
        return b"done:" + request

    handler = grpc.unary_unary_rpc_method_handler(call)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Slow", {"Call": handler})])


async def test_stop_drains_in_flight_calls_and_reports_not_serving() -> None:
    host = ServiceHost(["test.Slow"], _register_slow)
    port = await host.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "test.Slow"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        call = channel.unary_unary(SLOW_METHOD)(b"x")
        await asyncio.sleep(0.1)  # the call is now in flight
        stopping = asyncio.create_task(host.stop(grace_s=5))
        assert await call == b"done:x"
        await stopping
    with pytest.raises(grpc.aio.AioRpcError):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.unary_unary(SLOW_METHOD)(b"y", timeout=1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etude serve test", exit_on_error=False)
    parser.add_argument("--max-batch-size", type=int, default=1024)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--catalog-size", type=int, required=True)
    return parser


def test_environment_variables_set_option_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETUDE_MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("ETUDE_CATALOG_SIZE", "1000")
    parser = _parser()
    apply_env_defaults(parser)
    args = parser.parse_args([])
    assert (args.max_batch_size, args.catalog_size, args.device) == (64, 1000, "cpu")
    assert parser.parse_args(["--max-batch-size", "8"]).max_batch_size == 8  # flags win


@pytest.mark.parametrize(("name", "value"), [("ETUDE_MAX_BATCH_SIZE", "many"), ("ETUDE_DEVICE", "tpu")])
def test_bad_environment_value_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        apply_env_defaults(_parser())
    assert name in capsys.readouterr().err
