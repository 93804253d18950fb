"""Every result can say what produced it: versions, commit, machine, accelerator."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from etude.provenance import GIT_COMMIT_ENV, current_environment, differences, git_commit


def test_the_environment_names_versions_and_the_machine() -> None:
    environment = current_environment()
    assert environment.etude_version == "0.1.0"
    assert environment.python_version.startswith("3.")
    assert environment.torch_version and environment.grpcio_version and environment.protobuf_version
    assert environment.cpu_model
    assert 1 <= environment.cpu_cores_usable <= environment.cpu_cores
    assert environment.memory_bytes > 2**30
    assert environment.host


def test_an_images_build_commit_wins_over_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GIT_COMMIT_ENV, "abc123")
    assert git_commit() == "abc123"


def test_a_checkout_gives_its_head_and_says_when_it_is_dirty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(GIT_COMMIT_ENV, raising=False)

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "file.txt").write_text("one")
    git("add", "file.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "file.txt").write_text("two")
    assert git_commit(tmp_path) == head + "+dirty"
    assert git_commit(tmp_path / "not-a-checkout") == ""


def test_differences_name_each_field_that_changed() -> None:
    a = current_environment()
    b = current_environment()
    assert differences(a, b) == []
    b.torch_version, b.gpu_name = "2.11.0", "NVIDIA H100"
    assert differences(a, b) == [f"torch_version: {a.torch_version} vs 2.11.0", "gpu_name: - vs NVIDIA H100"]
