"""Replay of a click log in Cloud Storage (gs://BUCKET/OBJECT) against a real fake-gcs-server:
the workload service downloads it once per object generation and replays it like the local
file; a missing object is refused by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from click_logs import expected_sessions, random_clicks, sessions_of, write_log
from etude.services.workload.fit import ClickLogError
from etude.services.workload.gcs_log import download_click_log
from etude.services.workload.generator import SessionBatch
from etude.services.workload.server import WorkloadServicer
from gcs_emulator import fake_gcs_server, new_bucket
from google.cloud import storage

from etude.serving import ServiceHost, service_full_name
from etude.v1 import workload_pb2, workload_pb2_grpc


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with fake_gcs_server() as url:
        yield url


@pytest.fixture
def bucket(emulator: str) -> storage.Bucket:
    return storage.Client(project=None).bucket(new_bucket())


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[workload_pb2_grpc.WorkloadServiceStub]:
    servicer = WorkloadServicer(log_cache_dir=tmp_path / "cache")
    host = ServiceHost(
        [service_full_name(workload_pb2, "WorkloadService")],
        lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(servicer, server),
        port=0,
    )
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield workload_pb2_grpc.WorkloadServiceStub(channel)
    finally:
        await host.stop(grace_s=0)


def _replay(uri: str) -> workload_pb2.WorkloadSpec:
    return workload_pb2.WorkloadSpec(catalog_size=10_000, replay=workload_pb2.ReplaySource(path=uri))


async def _sessions(stub: workload_pb2_grpc.WorkloadServiceStub, uri: str) -> list[list[int]]:
    batches = [SessionBatch.from_proto(message) async for message in stub.StreamSessions(_replay(uri))]
    return sessions_of(batches)


async def test_a_log_in_the_bucket_replays_like_the_local_file_and_is_downloaded_once(
    stub: workload_pb2_grpc.WorkloadServiceStub, bucket: storage.Bucket, tmp_path: Path
) -> None:
    clicks = random_clicks(3_000, seed=4)
    local = write_log(tmp_path / "clicks.csv", clicks)
    bucket.blob("logs/clicks.csv").upload_from_filename(str(local))
    uri = f"gs://{bucket.name}/logs/clicks.csv"
    assert await _sessions(stub, uri) == expected_sessions(clicks)
    assert await _sessions(stub, uri) == expected_sessions(clicks)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    # A rewritten object (a new generation) is downloaded anew; the old copy goes.
    rewritten = random_clicks(500, seed=5)
    bucket.blob("logs/clicks.csv").upload_from_filename(str(write_log(tmp_path / "new.csv", rewritten)))
    assert await _sessions(stub, uri) == expected_sessions(rewritten)
    assert len(list((tmp_path / "cache").iterdir())) == 1


async def test_a_missing_object_is_refused_naming_the_uri(
    stub: workload_pb2_grpc.WorkloadServiceStub, bucket: storage.Bucket
) -> None:
    uri = f"gs://{bucket.name}/logs/absent.csv"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _sessions(stub, uri)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == f"replay.path: {uri} does not exist (no such object, or no such bucket)"


def test_a_uri_without_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClickLogError, match="expected gs://BUCKET/OBJECT"):
        download_click_log("gs://bucket-only/", tmp_path)
