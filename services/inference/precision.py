"""Scoring precisions and what this machine can run: bf16 on CPUs with native bf16 arithmetic
(and on CUDA), fp16 on CUDA only; the torch thread policy of a serving process.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# Keys match etude.services.inference.options.PRECISION_NAMES.
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
PRECISION_OF_DTYPE = {dtype: name for name, dtype in PRECISIONS.items()}

# CPU flags of native bf16 dot products (x86: AVX-512 BF16 or AMX; Arm: the BF16 extension).
# Without them oneDNN emulates bf16 with fp32 arithmetic plus conversions: slower than fp32.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


class PrecisionUnsupported(ValueError):
    """A precision this device cannot run well or at all; the message says why."""


def _cpu_flags() -> frozenset[str]:
    """The flags of /proc/cpuinfo (Linux); empty where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_bf16_support() -> tuple[bool, str]:
    """(supported, reason): bf16 needs oneDNN's bf16 kernels and a CPU flag of native bf16."""
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, "torch's oneDNN has no bf16 kernels for this CPU"
    native = sorted(set(CPU_BF16_FLAGS) & _cpu_flags())
    if not native:
        return False, (
            f"the CPU has none of the native bf16 flags {list(CPU_BF16_FLAGS)} in /proc/cpuinfo "
            "(oneDNN would emulate bf16, slower than fp32)"
        )
    return True, f"native bf16 ({', '.join(native)})"


def require_supported(precision: str, device: torch.device | str) -> None:
    """Raises PrecisionUnsupported naming the reason when `device` cannot score in `precision`."""
    if precision not in PRECISIONS:
        raise PrecisionUnsupported(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    device_type = torch.device(device).type
    if precision == "fp32" or device_type == "cuda":
        return
    if precision == "fp16":
        raise PrecisionUnsupported(
            f"precision fp16 needs a cuda device, got {str(device)!r}: CPUs have no fast fp16 "
            "matrix products (use bf16 on a CPU with native bf16, or fp32)"
        )
    if device_type != "cpu":
        raise PrecisionUnsupported(f"precision {precision} is supported on cpu and cuda, got {str(device)!r}")
    supported, reason = cpu_bf16_support()
    if not supported:
        raise PrecisionUnsupported(f"precision bf16 refused on this CPU: {reason}; use fp32")
