"""Prometheus can scrape every service: `--metrics-port` serves /metrics over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest

SERVICE_FLAGS = {
    "workload": [],
    "inference": ["--model", "noop", "--catalog-size", "100"],
    "loadgen": [],
    "controller": ["--results", "{tmp}/results"],
}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


@pytest.mark.parametrize("service", sorted(SERVICE_FLAGS))
async def test_every_service_serves_its_metrics_over_http(child_service, tmp_path: Path, service: str):
    port_file = tmp_path / "metrics-port"
    flags = [flag.format(tmp=tmp_path) for flag in SERVICE_FLAGS[service]]
    async with child_service(service, [*flags, "--metrics-port", "0", "--metrics-port-file", str(port_file)]):
        text = await asyncio.to_thread(_scrape, int(port_file.read_text()))
    build_info = [line for line in text.splitlines() if line.startswith("etude_build_info{")]
    assert len(build_info) == 1 and build_info[0].endswith(" 1.0")
    assert f'service="{service}"' in build_info[0] and 'version="0.1.0"' in build_info[0]
    # The process collector: what the service costs in CPU and memory.
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
