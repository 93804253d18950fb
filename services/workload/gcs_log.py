"""A click log in Cloud Storage (gs://BUCKET/OBJECT), downloaded whole into a local folder before
it is indexed: one file per object generation, so a rewritten object is downloaded anew and an
unchanged one only once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .fit import ClickLogError
from .replay import ReplaySource

GCS_PREFIX = "gs://"


def is_gcs(path: str) -> bool:
    return path.startswith(GCS_PREFIX)


def local_click_log(source: ReplaySource, cache_dir: Path) -> ReplaySource:
    """`source` itself for a local log; for gs://BUCKET/OBJECT, the same log downloaded into
    `cache_dir` (blocking). Raises ClickLogError (field "path") saying what is missing or denied."""
    if not is_gcs(source.path):
        return source
    return ReplaySource(str(download_click_log(source.path, cache_dir)), source.columns)


def download_click_log(uri: str, cache_dir: Path) -> Path:
    """The local copy of gs://BUCKET/OBJECT in `cache_dir`, downloaded unless this generation of
    it is there already (older generations of the object are removed). Credentials: Application
    Default Credentials, or none for the emulator STORAGE_EMULATOR_HOST names."""
    bucket_name, _, object_name = uri.removeprefix(GCS_PREFIX).partition("/")
    if not bucket_name or not object_name or object_name.endswith("/"):
        raise ClickLogError(f"{uri}: expected gs://BUCKET/OBJECT", field="path")
    try:
        from google.api_core import exceptions
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage
    except ImportError as error:
        raise ClickLogError(f"{uri}: gs:// needs the google-cloud-storage package", field="path") from error
    try:
        client = storage.Client(project=None)
        blob = client.bucket(bucket_name).get_blob(object_name)
        if blob is None:
            raise ClickLogError(f"{uri} does not exist (no such object, or no such bucket)", field="path")
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        local = cache_dir / f"{digest}-{blob.generation}{Path(object_name).suffix}"
        if local.exists():
            return local
        cache_dir.mkdir(parents=True, exist_ok=True)
        for older in cache_dir.glob(f"{digest}-*"):
            older.unlink(missing_ok=True)
        partial = local.with_name(f".{local.name}.{os.getpid()}.partial")
        # Pinned to the generation read above: a rewrite meanwhile cannot mix two versions.
        blob.download_to_filename(str(partial), if_generation_match=blob.generation)
        partial.rename(local)
        return local
    except DefaultCredentialsError as error:
        raise ClickLogError(
            f"{uri}: no Google Cloud credentials (set GOOGLE_APPLICATION_CREDENTIALS or run with a "
            f"service account): {str(error).splitlines()[0]}",
            field="path",
        ) from error
    except exceptions.NotFound:
        raise ClickLogError(
            f"{uri} does not exist (no such object, or no such bucket)", field="path"
        ) from None
    except exceptions.Forbidden as error:
        raise ClickLogError(
            f"{uri}: permission denied ({error.message}); the credentials need storage.objects.get",
            field="path",
        ) from error
    except exceptions.GoogleAPICallError as error:
        raise ClickLogError(f"{uri}: download failed: {error.code} {error.message}", field="path") from error
