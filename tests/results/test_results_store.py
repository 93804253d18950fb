"""The result store on a local folder, through its async face, and finding experiments in it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from etude.services.controller.validation import resolve
from etude.services.results.documents import experiments_at, load_experiment, save_experiment
from etude.services.results.errors import ResultsError
from etude.services.results.store import AsyncResultStore, LocalResultStore

from etude.spec import parse_spec_dict
from etude.v1 import controller_pb2


class _ThreadRecordingStore(LocalResultStore):
    """A folder store that notes the thread each write ran in."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.write_threads: list[int] = []

    def write_text(self, relative: str, text: str) -> None:
        self.write_threads.append(threading.get_ident())
        super().write_text(relative, text)


async def test_the_async_store_reads_and_writes_a_folder_off_the_event_loop(tmp_path: Path) -> None:
    blocking = _ThreadRecordingStore(tmp_path)
    store = AsyncResultStore(blocking)
    await store.write_json("exp/doc.json", {"a": 1})
    assert await store.read_text("exp/doc.json") == '{\n  "a": 1\n}\n'
    assert await store.exists("exp/doc.json") and not await store.exists("exp/none")
    assert (await store.local_dir("exp/trials/t1")).is_dir()
    assert await store.list_dirs("exp") == ["trials"]
    await store.sync("exp")  # a folder is the store itself: nothing to upload
    assert store.uri("exp") == str(tmp_path / "exp")
    assert blocking.write_threads and threading.get_ident() not in blocking.write_threads


async def test_writes_land_in_the_order_they_were_made(tmp_path: Path) -> None:
    store = AsyncResultStore(LocalResultStore(tmp_path))
    await asyncio.gather(*(store.write_text("exp/state.txt", f"{index}\n") for index in range(50)))
    assert (tmp_path / "exp" / "state.txt").read_text() == "49\n"


def _experiment(experiment_id: str) -> controller_pb2.Experiment:
    spec = resolve(
        parse_spec_dict(
            {
                "name": "found",
                "models": [{"name": "noop"}],
                "catalog_sizes": [100],
                "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
                "load": {"target_rate_per_s": 10, "ramp_duration_s": 1},
            }
        )
    )
    return controller_pb2.Experiment(experiment_id=experiment_id, spec=spec)


def test_experiments_are_found_in_an_experiment_folder_or_a_results_folder(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path)
    for name in ("b-2", "a-1"):
        save_experiment(store, _experiment(name))
    (tmp_path / "not-an-experiment").mkdir()
    assert [name for _, name in experiments_at(tmp_path)] == ["a-1", "b-2"]
    ((one_store, one),) = experiments_at(tmp_path / "b-2")
    assert one == "b-2" and load_experiment(one_store, one).spec.name == "found"
    with pytest.raises(ResultsError, match="neither"):
        experiments_at(tmp_path / "not-an-experiment")
    with pytest.raises(ResultsError, match="no such folder"):
        experiments_at(tmp_path / "absent")
    with pytest.raises(ResultsError, match="not found"):
        load_experiment(store, "not-an-experiment")
