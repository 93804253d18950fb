"""Prometheus metrics over HTTP for every service (`--metrics-port`), on the default registry.

Each service declares its own `etude_*` metrics in its own module; this one serves them, with
the process collector's CPU and memory and `etude_build_info` (the versions that produced them).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Gauge, start_http_server

BUILD_INFO = Gauge(
    "etude_build_info",
    "Always 1; the labels say which Etude and libraries this process runs.",
    ["service", "version", "git_commit", "python", "torch", "grpcio"],
)


def start_metrics_server(
    service: str, port: int, host: str = "127.0.0.1", port_file: str | None = None
) -> int:
    """Serves /metrics on host:port (0 picks a free port) in a daemon thread; returns the port."""
    from etude.provenance import current_environment

    environment = current_environment()
    BUILD_INFO.labels(
        service=service,
        version=environment.etude_version,
        git_commit=environment.git_commit,
        python=environment.python_version,
        torch=environment.torch_version,
        grpcio=environment.grpcio_version,
    ).set(1)
    server, _ = start_http_server(port, addr=host)
    bound = int(server.server_port)
    if port_file:
        # Atomically, like the gRPC port file: a reader never sees half a number.
        target = Path(port_file)
        partial = target.with_name(target.name + ".tmp")
        partial.write_text(str(bound))
        partial.replace(target)
    return bound
