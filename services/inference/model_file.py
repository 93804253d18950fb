"""Serialized TorchScript models: load and check a model file against the serving contract, prepare
it for a runtime, and export a registry model into such a file (`etude export-model`).

The contract of a model file: a TorchScript module whose forward(item_seq int64 [B, L],
item_seq_len int64 [B]) returns the session representation [B, d] (float), and which exports
(@torch.jit.export) `item_embeddings()` returning the [C+1, d] table (row 0 padding) that the
shared inner-product scorer multiplies with.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .models import MODELS, SHARED_SCORER, build_model
from .models.base import MAX_SESSION_LENGTH, SessionEncoder
from .options import DEFAULT_EMBEDDING_POLICY, resolve_embedding_dim
from .runtime import EncoderFn

if TYPE_CHECKING:
    from google.cloud import storage

# Optional metadata `etude export-model` stores next to the program (torch.jit.save's extra
# files); a file without it is served all the same.
METADATA_FILE = "etude.json"
METADATA_FORMAT_VERSION = 1
# Runtimes a model file can be served under: it is TorchScript already.
MODEL_FILE_RUNTIMES = ("eager", "jit")
# Lengths of the two probe sessions run at load: one full, one short (the padding must not
# change the output's shape).
PROBE_SESSION_LENGTHS = (MAX_SESSION_LENGTH, 3)
# Rows checked for NaN/inf per step: the check's mask stays small instead of a bool per value of
# the whole table (a quarter of an fp32 table at the load's peak).
_FINITE_CHECK_ROWS = 8_192


class ModelFileError(ValueError):
    """A model file that cannot be served; the message says exactly what is wrong with it."""


@dataclass(frozen=True)
class LoadedModelFile:
    """A model file that passed every check, with what was learnt from it."""

    path: str
    module: torch.jit.ScriptModule
    # The [C+1, d] table returned by item_embeddings(), on the serving device.
    item_table: Tensor
    catalog_size: int
    embedding_dim: int
    # True when C came from the table's rows because no catalog size was given.
    catalog_size_inferred: bool
    # What `etude export-model` recorded (model, seed, ...); empty for other files.
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The model's name for reports: the exported registry model's, else the file's stem."""
        return self.metadata.get("model") or Path(self.path).stem

    def details(self) -> dict[str, str]:
        """What GetModelInfo reports about the file."""
        source = "inferred from item_embeddings() rows" if self.catalog_size_inferred else "--catalog-size"
        exported = {f"exported_{key}": value for key, value in self.metadata.items()}
        return {
            **exported,
            "model_path": self.path,
            "model_format": "torchscript",
            "catalog_size_source": source,
        }


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _local_path(path: str) -> Path:
    if "://" in path:
        raise ModelFileError(f"model file {path}: only local paths are supported, and gs://BUCKET/OBJECT")
    local = Path(path)
    if not local.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not local.is_file():
        raise ModelFileError(f"model file {path} is not a regular file")
    return local


def _read_metadata(raw: bytes | str) -> dict[str, str]:
    if not raw:
        return {}
    try:
        decoded = json.loads(raw)
    except ValueError:
        return {}
    return {str(key): str(value) for key, value in decoded.items()} if isinstance(decoded, dict) else {}


def load_model_file(
    path: str, *, catalog_size: int | None = None, device: torch.device | str = "cpu"
) -> LoadedModelFile:
    """Loads `path` (local, or gs://BUCKET/OBJECT downloaded first) onto `device` and checks the
    contract; raises ModelFileError saying what fails.

    `catalog_size` None (or 0) infers C from the table's rows. The checks, in order: the file
    exists and is TorchScript; item_embeddings() exists and returns a finite 2-D float table with
    C+1 rows; forward on a probe batch of two sessions of different lengths (L = 50) returns
    finite floats of shape [2, d], d the table's width.
    """
    if path.startswith("gs://"):
        # Downloaded whole, loaded, then deleted: torch.jit.load keeps nothing open.
        with tempfile.TemporaryDirectory(prefix="etude-model-") as folder:
            local = download_gcs_model(path, Path(folder))
            return _load_checked(path, local, catalog_size, device)
    return _load_checked(path, _local_path(path), catalog_size, device)


def download_gcs_model(path: str, folder: Path) -> Path:
    """Downloads gs://BUCKET/OBJECT into `folder`; ModelFileError says what is missing or denied.

    Credentials are Application Default Credentials, or none for the emulator named by
    STORAGE_EMULATOR_HOST (which the client honours).
    """
    bucket_name, _, object_name = path.removeprefix("gs://").partition("/")
    if not bucket_name or not object_name or object_name.endswith("/"):
        raise ModelFileError(f"model file {path}: expected gs://BUCKET/OBJECT")
    try:
        from google.api_core import exceptions
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage
    except ImportError as error:
        raise ModelFileError(
            f"model file {path}: gs:// needs the google-cloud-storage package "
            "(pip install google-cloud-storage)"
        ) from error
    local = folder / (Path(object_name).name or "model.pt")
    try:
        client = storage.Client(project=None)
    except DefaultCredentialsError as error:
        raise ModelFileError(
            f"model file {path}: no Google Cloud credentials (set GOOGLE_APPLICATION_CREDENTIALS or run "
            f"with a service account): {_first_line(error)}"
        ) from error
    try:
        client.bucket(bucket_name).blob(object_name).download_to_filename(str(local))
    except exceptions.NotFound:
        raise ModelFileError(_missing_object(client, path, bucket_name, object_name)) from None
    except exceptions.Forbidden as error:
        raise ModelFileError(
            f"model file {path}: permission denied ({error.message}); the credentials need "
            "storage.objects.get on the bucket"
        ) from error
    except exceptions.GoogleAPICallError as error:
        raise ModelFileError(f"model file {path}: download failed: {error.code} {error.message}") from error
    return local


def _missing_object(client: storage.Client, path: str, bucket_name: str, object_name: str) -> str:
    """Says whether the bucket or only the object is missing, when the credentials may ask."""
    from google.api_core import exceptions

    try:
        bucket = client.lookup_bucket(bucket_name)
    except exceptions.GoogleAPICallError:
        return f"model file {path} does not exist (no such object, or no such bucket)"
    if bucket is None:
        return f"model file {path}: bucket gs://{bucket_name} does not exist"
    return f"model file {path} does not exist: bucket gs://{bucket_name} holds no object {object_name!r}"


def _load_checked(
    path: str, local: Path, catalog_size: int | None, device: torch.device | str
) -> LoadedModelFile:
    extra_files = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(local), map_location=device, _extra_files=extra_files)
    except Exception as error:
        raise ModelFileError(
            f"model file {path} is not a TorchScript file (torch.jit.load failed: {_first_line(error)}); "
            "save one with torch.jit.save(torch.jit.script(model), path)"
        ) from error
    module.eval()
    with torch.inference_mode():
        item_table = _check_item_table(path, module, catalog_size or None)
        _check_forward(path, module, item_table)
    return LoadedModelFile(
        path=path,
        module=module,
        item_table=item_table,
        catalog_size=item_table.size(0) - 1,
        embedding_dim=item_table.size(1),
        catalog_size_inferred=not catalog_size,
        metadata=_read_metadata(extra_files[METADATA_FILE]),
    )


def _check_item_table(path: str, module: torch.jit.ScriptModule, catalog_size: int | None) -> Tensor:
    if not hasattr(module, "item_embeddings"):
        raise ModelFileError(
            f"model file {path} has no method item_embeddings(): export one with @torch.jit.export "
            "that returns the [C+1, d] item table (row 0 padding)"
        )
    try:
        table = module.item_embeddings()
    except Exception as error:
        raise ModelFileError(f"model file {path}: item_embeddings() failed: {_first_line(error)}") from error
    if not isinstance(table, Tensor):
        raise ModelFileError(
            f"model file {path}: item_embeddings() must return a tensor, got {type(table).__name__}"
        )
    if table.dim() != 2:
        raise ModelFileError(
            f"model file {path}: item_embeddings() must return a 2-D [C+1, d] table, "
            f"got shape {list(table.shape)}"
        )
    if not table.is_floating_point():
        raise ModelFileError(f"model file {path}: item_embeddings() must return floats, got {table.dtype}")
    rows = table.size(0)
    if catalog_size is not None and rows != catalog_size + 1:
        raise ModelFileError(
            f"model file {path}: item_embeddings() has {rows} rows, expected catalog_size + 1 = "
            f"{catalog_size + 1} (row 0 is padding); its catalog holds {rows - 1} items"
        )
    if rows < 2 or table.size(1) < 1:
        raise ModelFileError(
            f"model file {path}: item_embeddings() has shape {list(table.shape)}: "
            "it needs at least 2 rows (padding and one item) and 1 column"
        )
    if not all(
        bool(torch.isfinite(table[start : start + _FINITE_CHECK_ROWS]).all())
        for start in range(0, rows, _FINITE_CHECK_ROWS)
    ):
        raise ModelFileError(f"model file {path}: item_embeddings() holds non-finite values (NaN or inf)")
    return table


def probe_batch(catalog_size: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Two right-padded sessions of different lengths (50 and 3) with ids in 1..catalog_size."""
    lengths = torch.tensor(PROBE_SESSION_LENGTHS, dtype=torch.int64)
    positions = torch.arange(MAX_SESSION_LENGTH)
    items = torch.arange(len(PROBE_SESSION_LENGTHS) * MAX_SESSION_LENGTH).view(-1, MAX_SESSION_LENGTH)
    item_seq = torch.where(positions < lengths[:, None], items % catalog_size + 1, 0)
    return item_seq.to(device), lengths.to(device)


def _check_forward(path: str, module: torch.jit.ScriptModule, item_table: Tensor) -> None:
    item_seq, item_seq_len = probe_batch(item_table.size(0) - 1, item_table.device)
    call = f"forward(item_seq int64 [2, {MAX_SESSION_LENGTH}], item_seq_len int64 [2])"
    try:
        output = module(item_seq, item_seq_len)
    except Exception as error:
        raise ModelFileError(f"model file {path}: {call} failed: {_first_line(error)}") from error
    if not isinstance(output, Tensor):
        raise ModelFileError(f"model file {path}: {call} must return a tensor, got {type(output).__name__}")
    expected = [len(PROBE_SESSION_LENGTHS), item_table.size(1)]
    if list(output.shape) != expected:
        raise ModelFileError(
            f"model file {path}: {call} returned shape {list(output.shape)}, expected {expected} "
            f"(one row per session, d = {item_table.size(1)} the width of item_embeddings())"
        )
    if not output.is_floating_point():
        raise ModelFileError(f"model file {path}: {call} must return floats, got {output.dtype}")
    if not bool(torch.isfinite(output).all()):
        raise ModelFileError(f"model file {path}: {call} returned non-finite values (NaN or inf)")


def prepare_model_file(module: torch.jit.ScriptModule, runtime: str) -> EncoderFn:
    """The loaded module under `runtime`: eager serves it as loaded, jit freezes and optimises it.

    torch.compile is refused: the file is a TorchScript program, not Python code to compile.
    """
    module = module.eval()
    if runtime == "eager":
        return module
    if runtime == "jit":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            frozen: EncoderFn = torch.jit.optimize_for_inference(torch.jit.freeze(module))
            return frozen
    raise ModelFileError(
        f"runtime {runtime!r} cannot serve a model file, which is TorchScript already: "
        f"use one of {list(MODEL_FILE_RUNTIMES)} (jit freezes and optimises it, eager serves it as loaded)"
    )


class _ExportedEncoder(nn.Module):
    """A registry encoder with the file contract's exported item_embeddings()."""

    def __init__(self, encoder: SessionEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.encoder(item_seq, item_seq_len)  # type: ignore[no-any-return]

    @torch.jit.export
    def item_embeddings(self) -> Tensor:
        return self.encoder.item_embeddings()


def export_model(
    model: str,
    catalog_size: int,
    output: str | Path,
    *,
    embedding_dim: int = 0,
    embedding_policy: str = DEFAULT_EMBEDDING_POLICY,
    seed: int = 0,
) -> LoadedModelFile:
    """Scripts registry model `model` (random weights from `seed`) into a model file at `output`.

    Returns the file as loaded back and checked. Models with their own scoring head (the file
    contract only carries the shared inner-product scorer's table) are refused with ValueError.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    if MODELS[model].scorer != SHARED_SCORER:
        raise ValueError(
            f"model {model!r} scores with its own head ({MODELS[model].scorer}), which a model file "
            "cannot carry: the file contract is the shared inner-product scorer over item_embeddings()"
        )
    dim = resolve_embedding_dim(catalog_size, embedding_dim, embedding_policy)
    encoder = build_model(model, catalog_size, dim, seed=seed)
    metadata = {
        "format_version": METADATA_FORMAT_VERSION,
        "model": model,
        "catalog_size": catalog_size,
        "embedding_dim": dim,
        "seed": seed,
        "torch_version": torch.__version__,
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # TorchScript is deprecated in torch 2.x but is the file format served here: keep it quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(_ExportedEncoder(encoder).eval())
        torch.jit.save(scripted, str(output), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return load_model_file(str(output), catalog_size=catalog_size)
