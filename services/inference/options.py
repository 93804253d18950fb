"""Choices and defaults of the inference service, in one torch-free place (the CLI and the
controller import it): what the service can run, and how embedding widths follow the catalog.
"""

from __future__ import annotations

from etude import defaults

EMBEDDING_POLICIES = ("fourth_root", "fourth_root_pow2")
RUNTIMES = ("eager", "jit", "compile")
PRECISION_NAMES = ("fp32", "bf16", "fp16")
DEFAULT_K = defaults.TOP_K
DEFAULT_MAX_REQUEST_ITEMS = defaults.MAX_REQUEST_ITEMS
DEFAULT_EMBEDDING_POLICY = defaults.EMBEDDING_POLICY
# Accuracy mode: sessions replayed at start-up to measure a reduced precision's recall@k (enough
# for recall@21 to two decimals), drawn with the microbenchmark's classic exponents.
DEFAULT_ACCURACY_SESSIONS = 1000
DEFAULT_ACCURACY_ALPHA_LENGTH = 2.2
DEFAULT_ACCURACY_ALPHA_CLICKS = 1.8


def fourth_root_dim(catalog_size: int) -> int:
    """The smallest integer d with d**4 >= catalog_size, computed in integers."""
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be >= 1, got {catalog_size}")
    dim = max(1, round(catalog_size**0.25))
    # The float estimate can be off by one either way for large sizes; integers decide.
    while dim**4 < catalog_size:
        dim += 1
    while dim > 1 and (dim - 1) ** 4 >= catalog_size:
        dim -= 1
    return dim


def resolve_embedding_dim(catalog_size: int, embedding_dim: int, policy: str) -> int:
    """`embedding_dim` when positive, else the size `policy` gives for the catalog."""
    if embedding_dim > 0:
        return embedding_dim
    if embedding_dim < 0:
        raise ValueError(f"embedding_dim must be >= 0 (0 = policy), got {embedding_dim}")
    if policy == "fourth_root":
        return fourth_root_dim(catalog_size)
    if policy == "fourth_root_pow2":
        dim = fourth_root_dim(catalog_size)
        return 1 << (dim - 1).bit_length()
    raise ValueError(f"embedding_policy must be one of {list(EMBEDDING_POLICIES)}, got {policy!r}")
