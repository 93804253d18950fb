"""What test drivers share: services that never fail while a trial runs, and no workload service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


class ServicesNeverLost:
    """The Driver protocol's watch of running services, for fakes whose services never fail.
    Their experiments have no workload service: "" leaves workload_endpoint empty, so a load
    generator would generate its sessions in-process."""

    @asynccontextmanager
    async def workload_service(self, log_dir: Path) -> AsyncIterator[str]:
        yield ""

    async def service_lost(self) -> str:
        await asyncio.Event().wait()  # waits until the runner cancels it
        return ""

    async def dead_services(self) -> list[str]:
        return []

    async def stop_leftovers(self, experiment_id: str, started: list[object]) -> list[str]:
        return []

    def inference_pid(self) -> int | None:
        return None  # nothing to sample
