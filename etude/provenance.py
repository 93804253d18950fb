"""What produced a result: this process's software versions, machine and accelerator, as an
`etude.v1.Environment`, and what differs between two of them (for `etude compare`).

Read once per process (it shells out to git and, on a GPU, to nvidia-smi); nothing here is on a
request path.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from etude.v1 import environment_pb2

GIT_COMMIT_ENV = "ETUDE_GIT_COMMIT"
IMAGE_ENV = "ETUDE_IMAGE"
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def git_commit(source_root: Path = SOURCE_ROOT) -> str:
    """The source's commit: ETUDE_GIT_COMMIT (an image's build), else the checkout's HEAD, with
    "+dirty" when tracked files differ from it; "" when neither is known."""
    if commit := os.environ.get(GIT_COMMIT_ENV, "").strip():
        return commit
    if not (source_root / ".git").exists():
        return ""
    head = _run(["git", "rev-parse", "HEAD"], cwd=source_root)
    if head and _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source_root):
        head += "+dirty"
    return head


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 0


def _describe_gpu(environment: environment_pb2.Environment) -> None:
    # Only where torch is already loaded and sees CUDA: asking would cost a controller seconds.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    device = torch.cuda.current_device()
    properties = torch.cuda.get_device_properties(device)
    environment.gpu_name = properties.name
    environment.gpu_memory_bytes = int(properties.total_memory)
    environment.cuda_version = torch.version.cuda or ""
    environment.gpu_driver_version = _run(
        ["nvidia-smi", f"--id={device}", "--query-gpu=driver_version", "--format=csv,noheader"]
    )


@functools.cache
def _static_environment() -> environment_pb2.Environment:
    return environment_pb2.Environment(
        etude_version=_version("etude"),
        git_commit=git_commit(),
        python_version=platform.python_version(),
        torch_version=_version("torch"),
        grpcio_version=_version("grpcio"),
        protobuf_version=_version("protobuf"),
        numpy_version=_version("numpy"),
        host=socket.gethostname(),
        platform=platform.platform(),
        cpu_model=_cpu_model(),
        cpu_cores=os.cpu_count() or 0,
        cpu_cores_usable=_usable_cores(),
        memory_bytes=_memory_bytes(),
        image=os.environ.get(IMAGE_ENV, ""),
    )


def current_environment() -> environment_pb2.Environment:
    """This process's environment; the GPU fields once torch has initialised CUDA."""
    environment = environment_pb2.Environment()
    environment.CopyFrom(_static_environment())
    _describe_gpu(environment)
    return environment


# What makes two measurements incomparable, as opposed to merely different machines' names.
COMPARED_FIELDS = (
    "etude_version",
    "git_commit",
    "python_version",
    "torch_version",
    "grpcio_version",
    "cpu_model",
    "cpu_cores_usable",
    "memory_bytes",
    "gpu_name",
    "gpu_driver_version",
    "cuda_version",
    "image",
)


def differences(a: environment_pb2.Environment, b: environment_pb2.Environment) -> list[str]:
    """One line per field that differs between two environments ("torch_version: 2.13.0 vs 2.11.0")."""
    return [
        f"{field}: {getattr(a, field) or '-'} vs {getattr(b, field) or '-'}"
        for field in COMPARED_FIELDS
        if getattr(a, field) != getattr(b, field)
    ]
