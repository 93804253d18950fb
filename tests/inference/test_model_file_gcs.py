"""--model-path gs://BUCKET/OBJECT against a real fake-gcs-server: a file exported with
`etude export-model` is downloaded and served (in-process and by `etude serve inference`), and a
missing bucket, a missing object or a file in the wrong format is refused with its reason."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from etude.services.cli import main as etude_main
from etude.services.controller.drivers.processes import ServiceStartError
from etude.services.inference.model_file import ModelFileError, load_model_file
from etude.services.inference.recommender import Recommender, RecommenderConfig
from gcs_emulator import fake_gcs_server, new_bucket
from google.cloud import storage

from etude.v1 import recommender_pb2, recommender_pb2_grpc

CATALOG_SIZE = 150
SESSION = [3, 14, 15, 92]


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with fake_gcs_server() as url:
        yield url


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "sasrec.pt"
    argv = ["export-model", "--model", "sasrec", "--catalog-size", str(CATALOG_SIZE), "--output", str(path)]
    assert etude_main(argv) == 0
    return path


@pytest.fixture(scope="module")
def model_uri(emulator: str, exported: Path) -> str:
    bucket = new_bucket()
    blob = storage.Client(project=None).bucket(bucket).blob("models/v1/sasrec.pt")
    blob.upload_from_filename(str(exported))
    return f"gs://{bucket}/models/v1/sasrec.pt"


def test_a_model_in_the_bucket_is_served_like_the_same_local_file(model_uri: str, exported: Path) -> None:
    remote = Recommender(RecommenderConfig("noop", 0, runtime="jit", model_path=model_uri))
    local = Recommender(RecommenderConfig("noop", 0, runtime="jit", model_path=str(exported)))
    assert remote.config.catalog_size == CATALOG_SIZE
    assert remote.config.model == "sasrec"  # from the file's export metadata
    assert remote.model_file is not None and remote.model_file.details()["model_path"] == model_uri
    query = remote.validate(SESSION, 10)
    assert remote.recommend_batch([query])[0].item_ids == local.recommend_batch([query])[0].item_ids


@pytest.mark.parametrize(
    ("object_path", "message"),
    [
        ("models/v1/absent.pt", r"does not exist: bucket gs://[^ ]+ holds no object 'models/v1/absent\.pt'"),
        ("models/v1/", r"expected gs://BUCKET/OBJECT"),
    ],
)
def test_a_missing_object_is_refused_naming_it(model_uri: str, object_path: str, message: str) -> None:
    bucket = model_uri.removeprefix("gs://").split("/")[0]
    with pytest.raises(ModelFileError, match=message):
        load_model_file(f"gs://{bucket}/{object_path}")


def test_a_missing_bucket_is_refused_naming_it(emulator: str) -> None:
    with pytest.raises(ModelFileError, match=r"bucket gs://no-such-models does not exist"):
        load_model_file("gs://no-such-models/sasrec.pt")


def test_an_object_that_is_not_torchscript_is_refused(emulator: str, tmp_path: Path) -> None:
    bucket = new_bucket()
    storage.Client(project=None).bucket(bucket).blob("notes.pt").upload_from_string(b"not a model")
    uri = f"gs://{bucket}/notes.pt"
    with pytest.raises(ModelFileError, match=rf"model file {uri} is not a TorchScript file"):
        load_model_file(uri)


async def test_etude_serve_inference_downloads_its_model_from_the_bucket(
    model_uri: str, exported: Path, child_service: Callable[..., object]
) -> None:
    # The child inherits STORAGE_EMULATOR_HOST, as a pod gets it from its environment.
    flags = ["--model-path", model_uri, "--runtime", "jit", "--threads", "1"]
    async with child_service("inference", flags) as endpoint:  # type: ignore[attr-defined]
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            info = await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest())
            answer = await stub.Recommend(recommender_pb2.RecommendRequest(item_ids=SESSION, k=10))
    assert info.catalog_size == CATALOG_SIZE
    local = Recommender(RecommenderConfig("noop", 0, runtime="jit", model_path=str(exported)))
    assert list(answer.item_ids) == local.recommend_batch([local.validate(SESSION, 10)])[0].item_ids


async def test_etude_serve_inference_refuses_to_start_on_a_missing_object(
    model_uri: str, child_service: Callable[..., object]
) -> None:
    missing = model_uri.replace("sasrec.pt", "gone.pt")
    with pytest.raises(ServiceStartError, match=r"holds no object 'models/v1/gone\.pt'"):
        async with child_service("inference", ["--model-path", missing]):  # type: ignore[attr-defined]
            pass
