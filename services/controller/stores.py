"""Opens the result store a spec or a flag names."""

from __future__ import annotations

from etude.spec import SpecError
from services.controller.store import LocalResultStore, ResultStore


def open_store(uri: str) -> ResultStore:
    """A store for `uri`: a local folder now; gs://bucket/prefix comes with the GCS store."""
    if uri.startswith("gs://"):
        raise SpecError(
            "results",
            f"{uri!r}: the Cloud Storage result store is not available yet; give a folder",
        )
    return LocalResultStore(uri)
