"""What test drivers share: services that never fail while a trial runs."""

from __future__ import annotations

import asyncio


class ServicesNeverLost:
    """The Driver protocol's watch of running services, for fakes whose services never fail."""

    async def service_lost(self) -> str:
        await asyncio.Event().wait()  # waits until the runner cancels it
        return ""

    async def dead_services(self) -> list[str]:
        return []

    async def stop_leftovers(self, experiment_id: str, started: list[object]) -> list[str]:
        return []

    def inference_pid(self) -> int | None:
        return None  # nothing to sample
