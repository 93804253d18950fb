"""The result store in Google Cloud Storage (`gs://bucket/prefix`), the Kubernetes target's store.

Documents the controller writes (experiment.json, summaries, reports) go straight to objects;
files that local processes write (records, series, logs) land in a local staging folder and
`sync()` uploads what changed. The client honours STORAGE_EMULATOR_HOST (fake-gcs-server).
"""

from __future__ import annotations

import mimetypes
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.cloud import storage

SCHEME = "gs://"
# Cloud Storage's bucket naming rules, loosely (dots allowed for domain-named buckets).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


class GcsStoreError(ValueError):
    """The store cannot be used (bad URI, missing bucket, no credentials, no permission)."""


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of `gs://bucket/prefix`; the prefix has no leading or trailing '/'."""
    if not uri.startswith(SCHEME):
        raise GcsStoreError(f"{uri!r} is not a gs://bucket/prefix URI")
    bucket, _, prefix = uri[len(SCHEME) :].partition("/")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise GcsStoreError(
            f"{uri!r}: {bucket!r} is not a bucket name (3-222 characters: a-z, 0-9, '.', '-', '_')"
        )
    return bucket, prefix.strip("/")


def new_client() -> storage.Client:
    """A Cloud Storage client: Application Default Credentials, or the emulator at
    STORAGE_EMULATOR_HOST (anonymous) when that is set."""
    try:
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage
    except ImportError as error:
        raise GcsStoreError(
            "gs:// needs the google-cloud-storage package: pip install google-cloud-storage"
        ) from error
    try:
        # No project: object reads and writes do not need one, and requiring it fails on
        # credentials that carry none.
        return storage.Client(project=None)
    except DefaultCredentialsError as error:
        raise GcsStoreError(
            "no Google Cloud credentials (set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth "
            f"application-default login`, or run with a service account): {error}"
        ) from error


def _remove_if_uploaded(root: Path, uploaded: dict[str, tuple[int, int]]) -> None:
    """Deletes a staging folder whose every file is in the bucket as it is now; else keeps it."""
    for path in root.rglob("*"):
        if path.is_file():
            stat = path.stat()
            if uploaded.get(path.relative_to(root).as_posix()) != (stat.st_mtime_ns, stat.st_size):
                return
    shutil.rmtree(root, ignore_errors=True)


def _content_type(name: str) -> str:
    # Everything Etude stores is text (.json, .csv, .md, .html, .log).
    return mimetypes.guess_type(name)[0] or "text/plain"


class GcsResultStore:
    """A result store under `gs://bucket/prefix`; see the module docstring for the staging folder."""

    def __init__(
        self,
        uri: str,
        *,
        staging_dir: str | Path | None = None,
        client: storage.Client | None = None,
    ) -> None:
        self.bucket_name, self.prefix = parse_gcs_uri(uri)
        self._client = client if client is not None else new_client()
        self._bucket = self._client.bucket(self.bucket_name)
        # Staged files as last uploaded, (mtime_ns, size) by relative path: sync() skips them.
        self._uploaded: dict[str, tuple[int, int]] = {}
        if staging_dir is not None:
            self.staging_root = Path(staging_dir)
        else:
            self.staging_root = Path(tempfile.mkdtemp(prefix="etude-gcs-"))
            # A folder of our own goes with the store (or the process), once all of it is uploaded.
            weakref.finalize(self, _remove_if_uploaded, self.staging_root, self._uploaded)
        # The runner syncs periodically from a thread while the final sync may start.
        self._sync_lock = threading.Lock()

    def uri(self, relative: str = "") -> str:
        name = self._object(relative)
        return f"{SCHEME}{self.bucket_name}/{name}" if name else f"{SCHEME}{self.bucket_name}"

    def check(self) -> None:
        """Raises GcsStoreError unless the bucket exists and its objects can be listed."""
        with self._errors(""):
            list(self._client.list_blobs(self.bucket_name, prefix=self._folder(""), max_results=1))

    def check_writable(self) -> None:
        """The bucket answers (check()); its staging folder is this store's own temporary folder."""
        from etude.spec import SpecError

        try:
            self.check()
        except GcsStoreError as error:
            raise SpecError("results", str(error)) from None

    def local_dir(self, relative: str) -> Path:
        """A staging folder for `relative`; its files reach the bucket at the next sync(relative)."""
        path = self.staging_root / relative
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, relative: str, text: str) -> None:
        """Writes one object; Cloud Storage makes it visible whole or not at all."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        with self._errors(relative):
            # Rewriting the same content is harmless: retry as the client does idempotent calls.
            self._bucket.blob(self._object(relative)).upload_from_string(
                text.encode(), content_type=_content_type(relative), retry=DEFAULT_RETRY
            )

    def read_text(self, relative: str) -> str:
        """The object's text; FileNotFoundError when there is none (as for a local file)."""
        from google.api_core import exceptions

        try:
            with self._errors(relative, missing_object_ok=True):
                return self._bucket.blob(self._object(relative)).download_as_text()
        except exceptions.NotFound:
            if not self._bucket_exists():
                raise GcsStoreError(f"{self.uri()}: bucket {self.bucket_name!r} does not exist") from None
            raise FileNotFoundError(f"{self.uri(relative)}: no such object") from None

    def exists(self, relative: str) -> bool:
        """True for an object, and for a folder (any object below `relative/`)."""
        with self._errors(relative):
            if relative.strip("/") and self._bucket.blob(self._object(relative)).exists():
                return True
            blobs = self._client.list_blobs(self.bucket_name, prefix=self._folder(relative), max_results=1)
            return any(True for _ in blobs)

    def list_dirs(self, relative: str = "") -> list[str]:
        """The names of the folders right below `relative`, sorted."""
        folder = self._folder(relative)
        with self._errors(relative):
            blobs = self._client.list_blobs(self.bucket_name, prefix=folder, delimiter="/")
            for _ in blobs:  # the prefixes fill in as the pages are read
                pass
        return sorted(prefix[len(folder) :].rstrip("/") for prefix in blobs.prefixes)

    def sync(self, relative: str = "") -> None:
        """Uploads the files under local_dir(relative) that are new or changed since their last upload."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        base = self.staging_root / relative
        if not base.is_dir():
            return
        with self._sync_lock:
            for path in sorted(base.rglob("*")):
                if not path.is_file():
                    continue
                key = path.relative_to(self.staging_root).as_posix()
                # Stat before the upload: a file still growing is uploaded again next time.
                stat = path.stat()
                version = (stat.st_mtime_ns, stat.st_size)
                if self._uploaded.get(key) == version:
                    continue
                with self._errors(key):
                    self._bucket.blob(self._object(key)).upload_from_filename(
                        str(path), content_type=_content_type(key), retry=DEFAULT_RETRY
                    )
                self._uploaded[key] = version

    def _object(self, relative: str) -> str:
        return "/".join(part for part in (self.prefix, relative.strip("/")) if part)

    def _folder(self, relative: str) -> str:
        name = self._object(relative)
        return f"{name}/" if name else ""

    def _bucket_exists(self) -> bool:
        from google.api_core import exceptions

        try:
            list(self._client.list_blobs(self.bucket_name, max_results=1))
        except exceptions.NotFound:
            return False
        return True

    @contextmanager
    def _errors(self, relative: str, *, missing_object_ok: bool = False) -> Iterator[None]:
        """Turns the client's errors into ones that say which store and object failed."""
        from google.api_core import exceptions

        try:
            yield
        except exceptions.NotFound as error:
            if missing_object_ok:
                raise
            # Listing or writing into a bucket that is not there.
            raise GcsStoreError(f"{self.uri()}: bucket {self.bucket_name!r} does not exist") from error
        except exceptions.Forbidden as error:
            raise GcsStoreError(
                f"{self.uri(relative)}: permission denied ({error.message}); the credentials need "
                "storage.objects.get, .list and .create on the bucket"
            ) from error
        except exceptions.GoogleAPICallError as error:
            raise GcsStoreError(f"{self.uri(relative)}: {error.code} {error.message}") from error
