"""How much memory a model's catalog-sized tables take, before anything is built: what the spec
check weighs a catalog size against (a 10^12-item catalog is refused with its estimate, not tried).

Only the tables that grow with the catalog count; at 10,000 items and more they dwarf the encoder.
"""

from __future__ import annotations

# RepeatNet scores with a second catalog-sized matrix, explore's M_e: [C + 1, 2 x hidden (64)].
REPEATNET_EXPLORE_COLUMNS = 128
FP32_BYTES = 4


def catalog_table_columns(model: str, embedding_dim: int) -> int:
    """Columns of all catalog-sized tables of `model` together (each has C + 1 rows)."""
    if model == "noop":
        return 0
    if model == "core":
        # The item table and its normalised copy, made once at load for cosine scoring.
        return 2 * embedding_dim
    if model == "repeatnet":
        return embedding_dim + REPEATNET_EXPLORE_COLUMNS
    return embedding_dim


def estimated_catalog_bytes(
    model: str, catalog_size: int, embedding_dim: int, bytes_per_value: int = FP32_BYTES
) -> int:
    """Bytes of `model`'s catalog-sized tables at `catalog_size` items (built in fp32 first)."""
    return (catalog_size + 1) * catalog_table_columns(model, embedding_dim) * bytes_per_value
