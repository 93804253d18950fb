"""Model files (--model-path): export round trip, each contract violation refused with its reason,
and the real `etude serve inference` process serving a file or refusing a bad one."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from etude.services.cli import main as etude_main
from etude.services.controller.drivers.processes import ServiceStartError
from etude.services.inference import cli as inference_cli
from etude.services.inference.model_file import (
    ModelFileError,
    export_model,
    load_model_file,
    prepare_model_file,
)
from etude.services.inference.recommender import Recommender, RecommenderConfig
from torch import Tensor, nn

from etude.config import apply_env_defaults
from etude.v1 import recommender_pb2, recommender_pb2_grpc

CATALOG_SIZE = 120
EMBEDDING_DIM = 8
SEED = 3


@pytest.fixture(scope="module")
def gru4rec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "gru4rec.pt"
    export_model("gru4rec", CATALOG_SIZE, path, embedding_dim=EMBEDDING_DIM, seed=SEED)
    return path


def sessions(count: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(1, CATALOG_SIZE + 1, size=length).tolist()
        for length in rng.integers(1, 60, size=count)  # beyond 50 too: truncated alike
    ]


def top_k(recommender: Recommender, session_list: list[list[int]]) -> tuple[list[list[int]], np.ndarray]:
    answers = recommender.recommend_batch([recommender.validate(items, 10) for items in session_list])
    return [answer.item_ids for answer in answers], np.array([answer.scores for answer in answers])


@pytest.mark.parametrize("runtime", ["eager", "jit"])
def test_an_exported_model_serves_the_same_top_k_as_the_registry_model_with_its_seed(
    gru4rec_file: Path, runtime: str
) -> None:
    registry = Recommender(
        RecommenderConfig("gru4rec", CATALOG_SIZE, embedding_dim=EMBEDDING_DIM, seed=SEED, warmup=False)
    )
    served = Recommender(
        RecommenderConfig("noop", CATALOG_SIZE, runtime=runtime, model_path=str(gru4rec_file))
    )
    batch = sessions(12)
    expected_ids, expected_scores = top_k(registry, batch)
    ids, scores = top_k(served, batch)
    assert ids == expected_ids
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    assert (served.config.model, served.embedding_dim) == ("gru4rec", EMBEDDING_DIM)


def test_the_catalog_size_is_taken_from_the_file_when_not_given_and_reported(gru4rec_file: Path) -> None:
    served = Recommender(RecommenderConfig("noop", 0, model_path=str(gru4rec_file), warmup=False))
    assert served.config.catalog_size == CATALOG_SIZE
    details = served.details()
    assert details["catalog_size_source"] == "inferred from item_embeddings() rows"
    assert (details["model_path"], details["model_format"]) == (str(gru4rec_file), "torchscript")
    assert (details["exported_model"], details["exported_seed"]) == ("gru4rec", str(SEED))
    with pytest.raises(
        ValueError, match=rf"item_ids\[0\] = {CATALOG_SIZE + 1} is outside 1\.\.{CATALOG_SIZE}"
    ):
        served.validate([CATALOG_SIZE + 1], 5)


def test_a_given_catalog_size_is_reported_as_given(gru4rec_file: Path) -> None:
    loaded = load_model_file(str(gru4rec_file), catalog_size=CATALOG_SIZE)
    assert not loaded.catalog_size_inferred
    assert loaded.details()["catalog_size_source"] == "--catalog-size"


def test_the_compile_runtime_is_refused_for_a_model_file(gru4rec_file: Path) -> None:
    with pytest.raises(ModelFileError, match="runtime 'compile' cannot serve a model file"):
        RecommenderConfig("noop", 0, runtime="compile", model_path=str(gru4rec_file))
    with pytest.raises(ModelFileError, match="use one of"):
        prepare_model_file(load_model_file(str(gru4rec_file)).module, "compile")


def test_models_with_their_own_scoring_head_are_not_exported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scores with its own head"):
        export_model("noop", CATALOG_SIZE, tmp_path / "noop.pt")
    assert not (tmp_path / "noop.pt").exists()


class Contract(nn.Module):
    """A model file's module with one knob per way of breaking the contract."""

    def __init__(
        self, rows: int = CATALOG_SIZE + 1, width: int = EMBEDDING_DIM, output_width: int = 0
    ) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(rows, width))
        self.output_width = output_width or width

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.table[item_seq].sum(1)[:, : self.output_width]

    @torch.jit.export
    def item_embeddings(self) -> Tensor:
        return self.table


class NoItemTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.width = EMBEDDING_DIM

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return torch.zeros(item_seq.size(0), self.width)


class FlatTable(Contract):
    @torch.jit.export
    def item_embeddings(self) -> Tensor:
        return self.table.flatten()


class NanOutput(Contract):
    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return torch.full((item_seq.size(0), self.output_width), float("nan"))


class OneRowPerClick(Contract):
    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.table[item_seq]


class IntegerOutput(Contract):
    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return item_seq[:, : self.output_width]


def scripted(module: nn.Module, path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what is tested
        torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


@pytest.mark.parametrize(
    ("module", "catalog_size", "message"),
    [
        (
            NoItemTable(),
            CATALOG_SIZE,
            r"has no method item_embeddings\(\): export one with @torch\.jit\.export",
        ),
        (
            Contract(rows=CATALOG_SIZE + 2),
            CATALOG_SIZE,
            rf"has {CATALOG_SIZE + 2} rows, expected catalog_size \+ 1 = {CATALOG_SIZE + 1}",
        ),
        (FlatTable(), CATALOG_SIZE, r"must return a 2-D \[C\+1, d\] table, got shape \[968\]"),
        (Contract(rows=1), None, r"it needs at least 2 rows"),
        (
            Contract(output_width=EMBEDDING_DIM - 1),
            CATALOG_SIZE,
            rf"returned shape \[2, {EMBEDDING_DIM - 1}\], expected \[2, {EMBEDDING_DIM}\]",
        ),
        (
            OneRowPerClick(),
            None,
            rf"returned shape \[2, 50, {EMBEDDING_DIM}\], expected \[2, {EMBEDDING_DIM}\]",
        ),
        (IntegerOutput(), CATALOG_SIZE, r"must return floats, got torch\.int64"),
        (NanOutput(), CATALOG_SIZE, r"returned non-finite values \(NaN or inf\)"),
    ],
    ids=[
        "missing-method",
        "wrong-rows",
        "1d-table",
        "empty-catalog",
        "wrong-width",
        "3d-output",
        "ints",
        "nan",
    ],
)
def test_each_contract_violation_is_refused_saying_what_is_wrong(
    tmp_path: Path, module: nn.Module, catalog_size: int | None, message: str
) -> None:
    path = scripted(module, tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match=message):
        load_model_file(path, catalog_size=catalog_size)
    # The recommender refuses it the same way, before anything is served.
    with pytest.raises(ModelFileError, match=message):
        Recommender(RecommenderConfig("noop", catalog_size or 0, model_path=path))


def test_a_file_that_is_not_torchscript_is_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "state_dict.pt"
    torch.save(Contract().state_dict(), pickled)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    for path in (pickled, text):
        with pytest.raises(ModelFileError, match=rf"model file {path} is not a TorchScript file"):
            load_model_file(str(path))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/nonexistent/model.pt", r"model file /nonexistent/model\.pt does not exist"),
        ("gs://bucket-only", r"expected gs://BUCKET/OBJECT"),
        ("https://host/model.pt", r"only local paths are supported"),
    ],
)
def test_a_missing_or_remote_file_is_refused(path: str, message: str) -> None:
    with pytest.raises(ModelFileError, match=message):
        load_model_file(path)


def test_a_valid_hand_written_file_is_served_with_its_table(tmp_path: Path) -> None:
    module = Contract()
    served = Recommender(RecommenderConfig("noop", 0, model_path=scripted(module, tmp_path / "mine.pt")))
    session = [4, 9, 4]
    padded = torch.tensor([session + [0] * (50 - len(session))])
    with torch.no_grad():
        expected = torch.topk(module(padded, torch.tensor([3]))[0] @ module.table[1:].T, 5).indices + 1
    assert served.recommend_batch([served.validate(session, 5)])[0].item_ids == expected.tolist()
    assert served.config.model == "mine"  # no export metadata: the file's stem


def test_etude_export_model_writes_a_servable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "exported.pt"
    argv = [
        "export-model",
        "--model",
        "gru4rec",
        "--catalog-size",
        "300",
        "--seed",
        "1",
        "--output",
        str(path),
    ]
    assert etude_main(argv) == 0
    assert f"etude serve inference --model-path {path}" in capsys.readouterr().out
    loaded = load_model_file(str(path))
    assert (loaded.catalog_size, loaded.embedding_dim, loaded.metadata["seed"]) == (300, 5, "1")


async def test_etude_serve_inference_serves_a_model_file(
    gru4rec_file: Path, child_service: Callable[..., object]
) -> None:
    flags = ["--model-path", str(gru4rec_file), "--runtime", "jit", "--threads", "1"]
    async with child_service("inference", flags) as endpoint:  # type: ignore[attr-defined]
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            response = await stub.Recommend(recommender_pb2.RecommendRequest(item_ids=[5, 6, 7], k=4))
            info = await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest())
    registry = Recommender(
        RecommenderConfig("gru4rec", CATALOG_SIZE, embedding_dim=EMBEDDING_DIM, seed=SEED, warmup=False)
    )
    assert list(response.item_ids) == registry.recommend_batch([registry.validate([5, 6, 7], 4)])[0].item_ids
    assert (info.model, info.catalog_size, info.embedding_dim) == ("gru4rec", CATALOG_SIZE, EMBEDDING_DIM)
    assert info.details["catalog_size_source"] == "inferred from item_embeddings() rows"


async def test_etude_serve_inference_exits_with_the_reason_for_a_bad_model_file(
    tmp_path: Path, child_service: Callable[..., object]
) -> None:
    path = scripted(NoItemTable(), tmp_path / "no_table.pt")
    with pytest.raises(ServiceStartError, match=r"exited with status 1(.|\n)*has no method item_embeddings"):
        async with child_service("inference", ["--model-path", path]):  # type: ignore[attr-defined]
            pass


def test_the_catalog_size_flag_is_optional_only_with_a_model_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(argv: list[str]) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        inference_cli.add_arguments(parser)
        apply_env_defaults(parser)
        return parser.parse_args(argv)

    assert (parse(["--model-path", "m.pt"]).catalog_size, parse(["--model-path", "m.pt"]).model_path) == (
        0,
        "m.pt",
    )
    with pytest.raises(SystemExit):
        parse([])
    monkeypatch.setenv("ETUDE_MODEL_PATH", "from-env.pt")
    assert parse([]).model_path == "from-env.pt"
