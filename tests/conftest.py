"""Fixtures shared by the whole suite: real service processes on ephemeral loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
from etude.services.controller.drivers.processes import ChildService


@pytest.fixture
def child_service(tmp_path: Path) -> Callable[..., object]:
    """`async with child_service("inference", flags) as endpoint:` runs `etude serve` for real."""

    @asynccontextmanager
    async def start(service: str, flags: list[str]) -> AsyncIterator[str]:
        child = ChildService(service, flags, tmp_path / f"{service}.log")
        try:
            yield await child.start(startup_timeout_s=120)
        finally:
            await child.stop(grace_s=10)

    return start


@pytest.fixture(autouse=True)
def _fresh_logging() -> object:
    """Commands run in-process configure structlog for the process; no test inherits that."""
    yield
    structlog.reset_defaults()
