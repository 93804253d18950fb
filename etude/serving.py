"""Hosting a grpc.aio server the same way for every service.

Adds the standard health service (SERVING once started, NOT_SERVING while draining) and server
reflection (so grpcurl needs no proto files), and stops gracefully on SIGTERM or SIGINT:
in-flight calls get `grace_s` seconds to finish.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from etude import defaults, security
from etude.limits import DEFAULT_MAX_REQUEST_BYTES, MAX_REQUEST_BYTES
from etude.reflection import DocumentedPool

_log = structlog.get_logger()

# What a server may send (a session batch, a large top-k answer, an experiment listing) and a
# client may receive; gRPC's default is 4 MiB. What a server accepts is per service (limits.py).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def server_options(service_names: Sequence[str], reuse_port: bool = False) -> list[tuple[str, int]]:
    """gRPC options of a server hosting `service_names`: requests no larger than the largest of
    their limits; SO_REUSEPORT only when asked (several serving processes on one port), so that
    otherwise a second server on a taken port fails instead of silently sharing it."""
    receive = max(
        (MAX_REQUEST_BYTES.get(name, DEFAULT_MAX_REQUEST_BYTES) for name in service_names),
        default=DEFAULT_MAX_REQUEST_BYTES,
    )
    return [
        ("grpc.max_receive_message_length", receive),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", int(reuse_port)),
    ]


class ServiceHost:
    """A grpc.aio server carrying some services, plus health and reflection.

    `reuse_port`: let other processes bind the same port (SO_REUSEPORT); the kernel spreads
    new connections across them.
    """

    def __init__(
        self,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
    ) -> None:
        self._security = security.server_security()
        self.server = grpc.aio.server(
            options=server_options(service_names, reuse_port=reuse_port),
            interceptors=security.server_interceptors(self._security),
        )
        register(self.server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        self._service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME],
            self.server,
            pool=DocumentedPool(),
        )
        self._address = f"{host}:{port}"
        self.port = 0
        self._health_server: grpc.aio.Server | None = None
        if self._security.plaintext_health_port is not None:
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
            self._health_address = f"{host}:{self._security.plaintext_health_port}"
        self.health_port = 0

    async def start(self) -> int:
        """Binds, starts and marks every service SERVING; returns the bound port."""
        if self._security.tls:
            # TLS only: a plaintext client cannot connect at all.
            credentials = security.server_credentials(self._security)
            self.port = self.server.add_secure_port(self._address, credentials)
        else:
            self.port = self.server.add_insecure_port(self._address)
        if self.port == 0:
            raise OSError(f"could not bind {self._address}")
        if self._health_server is not None:
            self.health_port = self._health_server.add_insecure_port(self._health_address)
            if self.health_port == 0:
                raise OSError(f"could not bind {self._health_address} (plaintext health)")
            await self._health_server.start()
        await self.server.start()
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace_s: float = defaults.GRACE_S) -> None:
        """Marks every service NOT_SERVING, then lets in-flight calls finish for `grace_s`."""
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)
        if self._health_server is not None:
            await self._health_server.stop(0)

    async def _set_status(self, status: int) -> None:
        for name in ["", *self._service_names]:
            await self._health.set(name, status)


async def run_until_signalled(
    host: ServiceHost,
    *,
    grace_s: float,
    port_file: str | None = None,
    on_stop: Callable[[], object] | None = None,
) -> None:
    """Starts `host`, writes its port to `port_file`, serves until SIGTERM/SIGINT, drains."""
    port = await host.start()
    if port_file:
        await asyncio.to_thread(_write_port_file, Path(port_file), port)
    loop = asyncio.get_running_loop()
    # Which loop runs the service (uvloop for the load generator, etude/event_loop.py).
    _log.info("serving", port=port, event_loop=type(loop).__module__.split(".")[0])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    termination = asyncio.create_task(host.server.wait_for_termination())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({termination, stopped}, return_when=asyncio.FIRST_COMPLETED)
    _log.info("draining", grace_s=grace_s)
    if on_stop is not None:
        result = on_stop()
        if asyncio.iscoroutine(result):
            await result
    await host.stop(grace_s)
    stopped.cancel()
    termination.cancel()
    _log.info("stopped")


def _write_port_file(path: Path, port: int) -> None:
    # Written atomically so a parent polling for it never reads half a number.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)


def service_full_name(descriptor_module: object, service: str) -> str:
    """`etude.v1.RecommenderService` from a generated *_pb2 module and a service name."""
    return descriptor_module.DESCRIPTOR.services_by_name[service].full_name  # type: ignore[attr-defined]
