"""Tabular values: rows, pyarrow Tables and pandas DataFrames, and their Parquet bodies.

Shared by the Parquet, S3 and PostgreSQL IO managers. pandas stays optional: a value is only
treated as a DataFrame when pandas is already imported (so the value could be one), and loading
as pandas is refused when configuring a manager if pandas is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any, Final, Literal, TypeGuard, get_args

import pyarrow as pa
import pyarrow.parquet as pq

from flowstone.errors import IOManagerError

if TYPE_CHECKING:
    from flowstone.io.base import IOTarget

PARQUET_CONTENT_TYPE: Final = "application/vnd.apache.parquet"
Compression = Literal["none", "snappy", "gzip", "brotli", "zstd", "lz4"]
DEFAULT_COMPRESSION: Final[Compression] = "snappy"
COMPRESSIONS: Final[frozenset[str]] = frozenset(get_args(Compression))
TABULAR_TYPES: Final = "a list of dicts, a pyarrow Table or a pandas DataFrame"

Row = dict[str, Any]

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "PARQUET_CONTENT_TYPE",
    "Compression",
    "compression_problem",
    "decode_parquet",
    "encode_parquet",
    "is_compression",
    "is_pandas_installed",
    "to_arrow",
    "to_rows",
]


def is_pandas_installed() -> bool:
    """Whether pandas can be imported (needed to load values as DataFrames)."""
    return importlib.util.find_spec("pandas") is not None


def is_compression(value: object) -> TypeGuard[Compression]:
    """Whether ``value`` names a Parquet compression codec pyarrow writes."""
    return isinstance(value, str) and value in COMPRESSIONS


def compression_problem(value: object) -> str | None:
    """Why ``value`` is not a Parquet compression codec, or ``None`` if it is one."""
    if is_compression(value):
        return None
    return f"compression {value!r} is not one of {', '.join(sorted(COMPRESSIONS))}"


def _is_dataframe(value: object) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _is_row_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(row, dict) and all(isinstance(key, str) for key in row) for row in value
    )


def _not_tabular(target: IOTarget, value: object, reason: str | None = None) -> IOManagerError:
    detail = f": {reason}" if reason else f", got {type(value).__name__}"
    return IOManagerError(
        f"the value of asset {target.asset!r} is not tabular (expected {TABULAR_TYPES}){detail}",
        asset=target.asset,
        partition=target.partition_key,
        retryable=False,
    )


def to_arrow(target: IOTarget, value: Any) -> pa.Table:
    """Convert a tabular value to a pyarrow Table, or raise a non-retryable ``IOManagerError``."""
    if isinstance(value, pa.Table):
        return value
    try:
        if _is_dataframe(value):
            return pa.Table.from_pandas(value)
        if _is_row_list(value):
            return pa.Table.from_pylist(value)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise _not_tabular(target, value, f"the columns cannot be typed ({exc})") from exc
    raise _not_tabular(target, value)


def to_rows(target: IOTarget, value: Any) -> list[Row]:
    """Return a tabular value as a list of row dicts (a list of dicts is returned as is)."""
    if _is_row_list(value):
        return list(value)
    return to_arrow(target, value).to_pylist()


def encode_parquet(target: IOTarget, table: pa.Table, *, compression: Compression) -> bytes:
    """Write ``table`` as one Parquet body in memory."""
    sink = pa.BufferOutputStream()
    try:
        pq.write_table(table, sink, compression=compression)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise IOManagerError(
            f"the value of asset {target.asset!r} cannot be written as Parquet: {exc}",
            asset=target.asset,
            partition=target.partition_key,
            retryable=False,
        ) from exc
    return bytes(sink.getvalue().to_pybytes())


def decode_parquet(target: IOTarget, body: bytes, *, as_pandas: bool) -> Any:
    """Read a Parquet body as a pyarrow Table, or a pandas DataFrame when ``as_pandas``."""
    try:
        table = pq.read_table(pa.BufferReader(body))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise IOManagerError(
            f"stored value of asset {target.asset!r} is not valid Parquet: {exc}",
            asset=target.asset,
            partition=target.partition_key,
            retryable=False,
        ) from exc
    return table.to_pandas() if as_pandas else table
