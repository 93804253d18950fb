"""The result store: where an experiment's spec, records, series and summaries are kept.

Locally a folder, `results/<experiment-id>/`; in Cloud Storage `gs://bucket/prefix/` (store_gcs.py).
Paths inside the store are relative and use '/'. Local processes (the loadgen, the inference
service) write into `local_dir(...)`; `sync(...)` makes those files part of the store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol


class ResultStore(Protocol):
    def uri(self, relative: str = "") -> str: ...
    def local_dir(self, relative: str) -> Path: ...
    def write_text(self, relative: str, text: str) -> None: ...
    def read_text(self, relative: str) -> str: ...
    def exists(self, relative: str) -> bool: ...
    def list_dirs(self, relative: str = "") -> list[str]: ...
    def sync(self, relative: str = "") -> None:
        """Makes what local processes wrote under local_dir(relative) part of the store."""
        ...


class LocalResultStore:
    """A result store in a local folder; writes are atomic (write then rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def uri(self, relative: str = "") -> str:
        return str(self.root / relative) if relative else str(self.root)

    def local_dir(self, relative: str) -> Path:
        """A folder of the store that local processes (the loadgen) can write into directly."""
        path = self.root / relative
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

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


def write_json(store: ResultStore, relative: str, document: Any) -> None:
    store.write_text(relative, json.dumps(document, indent=2, sort_keys=False) + "\n")
