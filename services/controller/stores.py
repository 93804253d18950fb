"""Opens the result store a spec or a flag names: a local folder, or gs://bucket/prefix."""

from __future__ import annotations

from etude.spec import SpecError

from .store import LocalResultStore, ResultStore


def open_store(uri: str) -> ResultStore:
    """A store for `uri`; raises SpecError("results", ...) when it cannot be used.

    gs://bucket/prefix is Cloud Storage (Application Default Credentials, or the emulator named
    by STORAGE_EMULATOR_HOST), checked now so that a missing bucket fails before any trial runs.
    Any other URI scheme is refused; everything else is a local folder.
    """
    if uri.startswith("gs://"):
        from .store_gcs import GcsResultStore, GcsStoreError

        try:
            store = GcsResultStore(uri)
            store.check()
        except GcsStoreError as error:
            raise SpecError("results", str(error)) from error
        return store
    if "://" in uri:
        raise SpecError("results", f"{uri!r}: give a local folder or gs://bucket/prefix")
    return LocalResultStore(uri)
