"""The Cloud Storage result store against a real fake-gcs-server: objects, folders, missing
objects and buckets, the staging folder's sync, and the runner putting a trial's files in the bucket."""

from __future__ import annotations

import gc
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from etude.services.controller.drivers.processes import ServiceStartError
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.results.store import open_store
from etude.services.results.store_gcs import GcsResultStore, GcsStoreError, parse_gcs_uri
from gcs_emulator import fake_gcs_server, new_bucket
from google.cloud import storage

from etude.spec import SpecError, parse_spec_dict
from etude.v1 import controller_pb2, experiment_pb2
from tests.controller.driver_fakes import ServicesNeverLost


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with fake_gcs_server() as url:
        yield url


@pytest.fixture
def bucket(emulator: str) -> str:
    return new_bucket()


@pytest.fixture
def store(bucket: str, tmp_path: Path) -> GcsResultStore:
    return GcsResultStore(f"gs://{bucket}/etude/results", staging_dir=tmp_path / "staging")


def objects(bucket: str) -> dict[str, bytes]:
    client = storage.Client(project=None)
    return {blob.name: blob.download_as_bytes() for blob in client.list_blobs(bucket)}


def test_written_text_is_read_back_from_an_object_under_the_prefix(
    store: GcsResultStore, bucket: str
) -> None:
    store.write_text("exp-1/experiment.json", '{"state": "x"}\n')
    assert store.read_text("exp-1/experiment.json") == '{"state": "x"}\n'
    assert objects(bucket) == {"etude/results/exp-1/experiment.json": b'{"state": "x"}\n'}
    blob = storage.Client(project=None).bucket(bucket).get_blob("etude/results/exp-1/experiment.json")
    assert blob is not None and blob.content_type == "application/json"
    store.write_text("exp-1/experiment.json", "replaced")
    assert store.read_text("exp-1/experiment.json") == "replaced"


def test_uris_name_the_bucket_and_prefix(store: GcsResultStore, bucket: str) -> None:
    assert store.uri() == f"gs://{bucket}/etude/results"
    assert store.uri("exp-1/trials/t") == f"gs://{bucket}/etude/results/exp-1/trials/t"
    assert GcsResultStore(f"gs://{bucket}/").uri("a") == f"gs://{bucket}/a"


def test_exists_is_true_for_objects_and_folders_only(store: GcsResultStore) -> None:
    store.write_text("exp-1/trials/t/trial.json", "{}")
    assert store.exists("exp-1/trials/t/trial.json")
    assert store.exists("exp-1") and store.exists("exp-1/trials") and store.exists("")
    assert not store.exists("exp-1/trials/t/records.csv")
    assert not store.exists("exp-2")
    # A name that only starts like a folder is not one.
    assert not store.exists("exp")


def test_list_dirs_names_the_folders_right_below(store: GcsResultStore, bucket: str) -> None:
    assert store.list_dirs() == []
    for name in ("b-exp/experiment.json", "a-exp/experiment.json", "a-exp/trials/t1/x", "a-exp/trials/t2/y"):
        store.write_text(name, "-")
    store.write_text("loose-file.txt", "not a folder")
    # Beside the prefix, not under it: must not be listed.
    storage.Client(project=None).bucket(bucket).blob("etude/other/x").upload_from_string("-")
    assert store.list_dirs() == ["a-exp", "b-exp"]
    assert store.list_dirs("a-exp") == ["trials"]
    assert store.list_dirs("a-exp/trials") == ["t1", "t2"]
    assert store.list_dirs("nothing-here") == []


def test_a_missing_object_reads_as_file_not_found(store: GcsResultStore) -> None:
    with pytest.raises(FileNotFoundError, match=r"gs://.*/etude/results/exp-1/nope\.json: no such object"):
        store.read_text("exp-1/nope.json")


def test_a_missing_bucket_is_refused_when_the_store_is_opened(emulator: str) -> None:
    with pytest.raises(SpecError, match=r"results: gs://no-such-bucket-here/x: bucket 'no-such-bucket-here'"):
        open_store("gs://no-such-bucket-here/x")
    store = GcsResultStore("gs://no-such-bucket-here/x")
    with pytest.raises(GcsStoreError, match="does not exist"):
        store.write_text("a.json", "{}")
    with pytest.raises(GcsStoreError, match="does not exist"):
        store.read_text("a.json")
    with pytest.raises(GcsStoreError, match="does not exist"):
        store.list_dirs()


@pytest.mark.parametrize(
    ("uri", "message"),
    [("gs://", "is not a bucket name"), ("gs://Upper/x", "is not a bucket name"), ("s3://b/x", "gs://")],
)
def test_malformed_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        open_store(uri)
    with pytest.raises(GcsStoreError):
        parse_gcs_uri(uri)


def test_open_store_gives_a_gcs_store_for_gs_uris_and_a_folder_otherwise(bucket: str, tmp_path: Path) -> None:
    assert isinstance(open_store(f"gs://{bucket}/p"), GcsResultStore)
    assert open_store(str(tmp_path)).uri() == str(tmp_path)


def test_sync_uploads_a_trial_folder_and_then_only_what_changed(store: GcsResultStore, bucket: str) -> None:
    trial = store.local_dir("exp-1/trials/noop")
    assert trial.is_relative_to(store.staging_root)
    (trial / "records.csv").write_text("tick,status\n0,OK\n")
    (trial / "series.csv").write_text("tick\n0\n")
    (trial / "probes" / "01-100").mkdir(parents=True)
    (trial / "probes" / "01-100" / "records.csv").write_text("probe\n")
    store.local_dir("exp-1/logs")  # an empty folder uploads nothing
    assert objects(bucket) == {}

    store.sync("exp-1")
    prefix = "etude/results/exp-1/trials/noop"
    assert objects(bucket) == {
        f"{prefix}/records.csv": b"tick,status\n0,OK\n",
        f"{prefix}/series.csv": b"tick\n0\n",
        f"{prefix}/probes/01-100/records.csv": b"probe\n",
    }
    assert store.read_text("exp-1/trials/noop/records.csv") == "tick,status\n0,OK\n"
    assert store.list_dirs("exp-1/trials/noop/probes") == ["01-100"]

    client_bucket = storage.Client(project=None).bucket(bucket)
    generations = {blob.name: blob.generation for blob in client_bucket.list_blobs()}
    with (trial / "records.csv").open("a") as handle:
        handle.write("1,OK\n")
    store.sync("exp-1")
    after = {blob.name: blob.generation for blob in client_bucket.list_blobs()}
    assert objects(bucket)[f"{prefix}/records.csv"] == b"tick,status\n0,OK\n1,OK\n"
    assert after[f"{prefix}/records.csv"] != generations[f"{prefix}/records.csv"]
    # Unchanged files are not uploaded again.
    assert after[f"{prefix}/series.csv"] == generations[f"{prefix}/series.csv"]


class _NoDeployDriver(ServicesNeverLost):
    """Brings up no service: each trial fails to deploy, after its 'service' logged a line."""

    name = "fake"

    @asynccontextmanager
    async def inference_service(
        self, trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec, log_dir: Path
    ) -> AsyncIterator[str]:
        (log_dir / "inference.log").write_text(f"{trial.trial_id} starting\n")
        raise ServiceStartError(f"{trial.trial_id}: no cluster in this test")
        yield ""  # pragma: no cover

    @asynccontextmanager
    async def loadgen_service(self, log_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        (log_dir / "loadgen.log").write_text("loadgen up\n")
        yield "127.0.0.1:9"

    @asynccontextmanager
    async def loadgen_records(self, local_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        yield str(local_dir)


async def test_the_runner_puts_every_trial_folder_and_log_in_the_bucket(store: GcsResultStore) -> None:
    spec = resolve(
        parse_spec_dict(
            {
                "name": "gcs",
                "models": [{"name": "noop"}, {"name": "gru4rec"}],
                "catalog_sizes": [100],
                "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
                "load": {"target_rate_per_s": 10, "ramp_duration_s": 1, "hold_duration_s": 1},
                "results": store.uri(),
            }
        )
    )
    experiment = new_experiment(spec, store)
    await ExperimentRunner(experiment, _NoDeployDriver(), store).run()

    experiment_id = experiment.experiment_id
    assert experiment.state == controller_pb2.EXPERIMENT_STATE_FAILED
    assert experiment.results_uri == store.uri(experiment_id)
    assert store.read_text(f"{experiment_id}/logs/loadgen.log") == "loadgen up\n"
    for result in experiment.trials:
        trial_dir = f"{experiment_id}/trials/{result.trial.trial_id}"
        assert result.results_uri == store.uri(trial_dir)
        assert store.read_text(f"{trial_dir}/inference.log") == f"{result.trial.trial_id} starting\n"
        assert "no cluster in this test" in store.read_text(f"{trial_dir}/trial.json")
    assert '"EXPERIMENT_STATE_FAILED"' in store.read_text(f"{experiment_id}/experiment.json")
    assert store.exists(f"{experiment_id}/summary.md") and store.exists(f"{experiment_id}/report.md")


def test_a_staging_folder_of_its_own_is_removed_only_once_everything_is_uploaded(bucket: str) -> None:
    store = GcsResultStore(f"gs://{bucket}/p")
    synced, staging = store.local_dir("exp-1"), store.staging_root
    (synced / "records.csv").write_text("uploaded\n")
    store.sync("exp-1")
    del store
    gc.collect()
    assert not staging.exists()

    store = GcsResultStore(f"gs://{bucket}/p")
    (store.local_dir("exp-2") / "records.csv").write_text("never uploaded\n")
    staging = store.staging_root
    del store
    gc.collect()
    assert (staging / "exp-2" / "records.csv").read_text() == "never uploaded\n"
    shutil.rmtree(staging)


def test_reports_are_found_under_a_gs_experiment_or_results_prefix(bucket: str) -> None:
    from etude.services.results.documents import experiments_at
    from etude.services.results.errors import ResultsError

    store = open_store(f"gs://{bucket}/results")
    for experiment_id in ("first", "second"):
        store.write_text(f"{experiment_id}/experiment.json", "{}")
    store.write_text("not-an-experiment/notes.txt", "")

    found = experiments_at(f"gs://{bucket}/results")
    assert sorted(name for _, name in found) == ["first", "second"]
    ((one_store, one),) = experiments_at(f"gs://{bucket}/results/second/")
    assert one == "second" and one_store.uri(one).endswith(f"{bucket}/results/second")
    with pytest.raises(ResultsError, match="neither"):
        experiments_at(f"gs://{bucket}/elsewhere")
