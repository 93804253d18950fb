"""The result store: where an experiment's spec, records, series and summaries are kept.

Locally a folder, `results/<experiment-id>/`; in Cloud Storage `gs://bucket/prefix/` (store_gcs.py).
Paths inside the store are relative and use '/' (layout.py names them). Local processes (the
loadgen, the inference service) write into `local_dir(...)`; `sync(...)` makes those files part
of the store. A ResultStore's calls block (a GCS write is an HTTP upload with retries): code on
an event loop uses AsyncResultStore, which runs each of them off the loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path
from typing import Any, Protocol

from etude.spec import SpecError

from .errors import ResultsUnwritable

# Write errors of a disk with no room left (or no quota): a file's own blocks can still be reused.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


class ResultStore(Protocol):
    def uri(self, relative: str = "") -> str: ...
    def local_dir(self, relative: str) -> Path: ...
    def write_text(self, relative: str, text: str) -> None: ...
    def read_text(self, relative: str) -> str: ...
    def exists(self, relative: str) -> bool: ...
    def list_dirs(self, relative: str = "") -> list[str]: ...
    def check_writable(self) -> None:
        """Raises SpecError("results", ...) unless results can be written here now."""
        ...

    def sync(self, relative: str = "") -> None:
        """Makes what local processes wrote under local_dir(relative) part of the store."""
        ...


class LocalResultStore:
    """A result store in a local folder; writes are atomic (write then rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def uri(self, relative: str = "") -> str:
        return str(self.root / relative) if relative else str(self.root)

    def check_writable(self) -> None:
        """Raises SpecError("results", ...) when the folder cannot hold results: a file in the
        way, no permission, a read-only or full disk (checked before anything runs)."""
        probe = self.root / f".etude-write-check-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_text("results can be written here\n")
            probe.unlink()
        except OSError as error:
            reason = error.strerror or str(error)
            raise SpecError("results", f"{self.root}: cannot write results there: {reason}") from None

    def local_dir(self, relative: str) -> Path:
        """A folder of the store that local processes (the loadgen) can write into directly."""
        path = self.root / relative
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, relative: str, text: str) -> None:
        """Writes through a temporary file renamed over the old one. On a full disk that cannot
        hold the new copy, an existing file is rewritten in place: truncating it frees its
        blocks, room enough for the next version of a state file (experiment.json must not stay
        RUNNING because the disk filled). No temporary file is left behind either way."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            self._write_new(tmp, text)
            os.replace(tmp, path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            if error.errno not in _NO_ROOM or not path.exists():
                raise
            self._overwrite(path, text)

    def _write_new(self, path: Path, text: str) -> None:
        path.write_text(text)

    def _overwrite(self, path: Path, text: str) -> None:
        with path.open("r+") as file:
            file.truncate(0)
            file.write(text)

    def read_text(self, relative: str) -> str:
        return (self.root / relative).read_text()

    def exists(self, relative: str) -> bool:
        return (self.root / relative).exists()

    def list_dirs(self, relative: str = "") -> list[str]:
        base = self.root / relative
        if not base.is_dir():
            return []
        return sorted(entry.name for entry in base.iterdir() if entry.is_dir())

    def sync(self, relative: str = "") -> None:
        """Nothing to do: local_dir() is a folder of the store itself."""


def json_text(document: Any) -> str:
    """A JSON document as the store keeps it (indented, a final newline)."""
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def write_json(store: ResultStore, relative: str, document: Any) -> None:
    store.write_text(relative, json_text(document))


class AsyncResultStore:
    """A ResultStore for code on an event loop: every call runs in a thread. Writes go one at a
    time in the order they were made, so the last state written is the last one stored."""

    def __init__(self, store: ResultStore) -> None:
        self.blocking = store
        self._writes = asyncio.Lock()

    def uri(self, relative: str = "") -> str:
        return self.blocking.uri(relative)

    async def local_dir(self, relative: str) -> Path:
        """Raises ResultsUnwritable when the folder cannot be made."""
        try:
            return await asyncio.to_thread(self.blocking.local_dir, relative)
        except OSError as error:
            raise _unwritable(self.uri(relative), error) from error

    async def write_text(self, relative: str, text: str) -> None:
        """Raises ResultsUnwritable, naming the file and the reason, when it cannot be written."""
        async with self._writes:
            try:
                await asyncio.to_thread(self.blocking.write_text, relative, text)
            except OSError as error:
                raise _unwritable(self.uri(relative), error) from error

    async def write_json(self, relative: str, document: Any) -> None:
        await self.write_text(relative, json_text(document))

    async def read_text(self, relative: str) -> str:
        return await asyncio.to_thread(self.blocking.read_text, relative)

    async def exists(self, relative: str) -> bool:
        return await asyncio.to_thread(self.blocking.exists, relative)

    async def list_dirs(self, relative: str = "") -> list[str]:
        return await asyncio.to_thread(self.blocking.list_dirs, relative)

    async def sync(self, relative: str = "") -> None:
        await asyncio.to_thread(self.blocking.sync, relative)


def _unwritable(where: str, error: OSError) -> ResultsUnwritable:
    return ResultsUnwritable(f"results: cannot write {where}: {error.strerror or error}", error.errno)


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
