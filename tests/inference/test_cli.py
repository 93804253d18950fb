"""`etude serve inference`: its flags, their environment defaults, and a real process."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

import grpc
import pytest
from etude.services.controller.drivers.processes import ServiceStartError
from etude.services.inference import cli
from etude.services.inference.models import MODEL_NAMES
from etude.services.inference.precision import cpu_bf16_support

from etude.config import apply_env_defaults
from etude.v1 import recommender_pb2, recommender_pb2_grpc


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    apply_env_defaults(parser)
    return parser.parse_args(argv)


def test_defaults_match_the_documented_service_settings() -> None:
    args = parse(["--catalog-size", "1000"])
    assert (args.model, args.catalog_size, args.embedding_dim) == ("noop", 1000, 0)
    assert (args.max_batch_size, args.max_batch_delay_ms) == (1024, 2.0)
    assert (args.max_request_items, args.default_k, args.threads) == (1000, 21, 0)
    assert (args.device, args.runtime, args.precision) == ("cpu", "eager", "fp32")
    assert (args.executors, args.max_queue_wait_ms) == (1, 0.0)
    assert cli.DEFAULT_PORT == 50052


def test_model_choices_come_from_the_registry() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    model = next(a for a in parser._actions if a.dest == "model")
    assert tuple(model.choices or ()) == MODEL_NAMES


def test_catalog_size_is_required_unless_the_environment_gives_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit):
        parse([])
    monkeypatch.setenv("ETUDE_CATALOG_SIZE", "5000")
    monkeypatch.setenv("ETUDE_MODEL", "gru4rec")
    args = parse([])
    assert (args.catalog_size, args.model) == (5000, "gru4rec")


def test_importing_the_cli_does_not_import_torch() -> None:
    code = "import sys, etude.services.inference.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


async def test_etude_serve_inference_runs_as_a_process_and_answers(
    child_service: Callable[..., object],
) -> None:
    flags = [
        "--model",
        "gru4rec",
        "--catalog-size",
        "1000",
        "--runtime",
        "jit",
        "--threads",
        "1",
        "--executors",
        "2",
    ]
    async with child_service("inference", flags) as endpoint:  # type: ignore[attr-defined]
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            response = await stub.Recommend(recommender_pb2.RecommendRequest(item_ids=[5, 6, 7], k=4))
            info = await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest())
    assert len(response.item_ids) == 4
    assert (info.model, info.runtime, info.embedding_dim) == ("gru4rec", "jit", 6)
    assert (info.details["torch_threads"], info.details["executors"]) == ("1", "2")
    # The serving process's own versions and machine (on Kubernetes: the pod's, not the controller's).
    assert info.environment.etude_version and info.environment.torch_version
    assert info.environment.cpu_cores_usable >= 1 and info.environment.host


def test_executors_come_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETUDE_EXECUTORS", "3")
    assert parse(["--catalog-size", "10"]).executors == 3


@pytest.mark.skipif(not cpu_bf16_support()[0], reason="this CPU has no native bf16")
async def test_serve_inference_with_bf16_reports_precision_and_recall(
    child_service: Callable[..., object],
) -> None:
    flags = ["--model", "gru4rec", "--catalog-size", "5000", "--precision", "bf16", "--threads", "1"]
    async with child_service("inference", flags) as endpoint:  # type: ignore[attr-defined]
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            response = await stub.Recommend(recommender_pb2.RecommendRequest(item_ids=[5, 6, 7], k=4))
            info = await stub.GetModelInfo(recommender_pb2.GetModelInfoRequest())
    assert len(response.item_ids) == 4
    assert info.precision == "bf16" and info.HasField("accuracy")
    assert (info.accuracy.k, info.accuracy.sessions) == (21, 1000)
    assert 0.9 <= info.accuracy.recall_at_k <= 1.0


async def test_serve_inference_refuses_fp16_on_cpu_naming_the_reason(
    child_service: Callable[..., object],
) -> None:
    flags = ["--model", "gru4rec", "--catalog-size", "100", "--precision", "fp16"]
    with pytest.raises(ServiceStartError, match="fp16 needs a cuda device"):
        async with child_service("inference", flags):  # type: ignore[attr-defined]
            pass
