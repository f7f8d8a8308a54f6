"""The Parquet IO manager (pyarrow): one Parquet file per asset partition, locally or on S3.

``path`` is a local directory (files ``<path>/<asset>/<percent-encoded key>.parquet``, written to a
temporary file, fsynced and renamed into place) or an ``s3://bucket/prefix`` URI, stored through
the S3 IO manager with the same key layout. Values are tabular: a list of dicts, a pyarrow Table
or a pandas DataFrame. ``load`` returns a pyarrow Table, or a pandas DataFrame when the manager is
configured with ``as_pandas=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flowstone.errors import DefinitionError, IOManagerError
from flowstone.io.base import (
    IOTarget,
    StoredOutput,
    hash_content,
    invalid_options_error,
    unknown_option_problems,
)
from flowstone.io.filesystem import file_error, file_stem, write_atomically
from flowstone.io.s3 import S3IOManager
from flowstone.io.tabular import (
    DEFAULT_COMPRESSION,
    Compression,
    compression_problem,
    decode_parquet,
    encode_parquet,
    is_compression,
    is_pandas_installed,
    to_arrow,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_PATH: Final = str(Path("var") / "parquet")
S3_SCHEME: Final = "s3://"
PARQUET_SUFFIX: Final = ".parquet"
ASSET_OPTIONS: Final = frozenset({"compression"})

__all__ = ["ParquetIOManager"]


class ParquetIOManager:
    """Stores tabular values as Parquet files, one per asset partition; overwrites on re-store.

    Options: ``path`` (directory or ``s3://bucket/prefix``), ``as_pandas``, ``compression`` and,
    for S3 paths, ``s3`` (the S3 client options: ``endpoint_url``, ``region_name``, credentials,
    timeouts). Per-asset ``io_options``: ``compression``.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        as_pandas: bool = False,
        compression: str = DEFAULT_COMPRESSION,
        s3: Mapping[str, Any] | None = None,
    ) -> None:
        if not is_compression(compression):
            raise DefinitionError(str(compression_problem(compression)))
        if as_pandas and not is_pandas_installed():
            raise DefinitionError("as_pandas needs pandas, which is not installed")
        self.as_pandas = as_pandas
        self.compression: Compression = compression
        self.base_dir: Path | None = None
        self.s3: S3IOManager | None = None
        location = os.fspath(path)
        if location.startswith(S3_SCHEME):
            bucket, _, prefix = location.removeprefix(S3_SCHEME).partition("/")
            self.s3 = S3IOManager(
                bucket=bucket,
                prefix=prefix,
                file_format="parquet",
                as_pandas=as_pandas,
                compression=compression,
                **dict(s3 or {}),
            )
        elif s3:
            raise DefinitionError("the s3 option only applies to an s3://bucket/prefix path")
        else:
            self.base_dir = Path(location)

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        """Check an asset's ``io_options`` (``flowstone.E009``)."""
        problems = unknown_option_problems(options, ASSET_OPTIONS)
        if "compression" in options:
            problem = compression_problem(options["compression"])
            problems += [problem] if problem else []
        return problems

    def _compression(self, target: IOTarget) -> Compression:
        problems = self.validate_options(target.options)
        compression = target.options.get("compression", self.compression)
        if problems or not is_compression(compression):
            raise invalid_options_error(target, problems)
        return compression

    def _s3_target(self, target: IOTarget) -> IOTarget:
        """The S3 manager's view of ``target``: its options are the manager's own."""
        return IOTarget(
            asset=target.asset, partition_key=target.partition_key, version=target.version
        )

    def path_for(self, target: IOTarget) -> Path:
        """The local file of ``target`` (only for a local ``path``)."""
        if self.base_dir is None:
            raise IOManagerError(
                "this Parquet IO manager stores on S3; it has no local path",
                asset=target.asset,
                partition=target.partition_key,
            )
        return self.base_dir / target.asset / f"{file_stem(target)}.parquet"

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Write the value as Parquet (atomically on disk; one PUT on S3)."""
        compression = self._compression(target)
        table = to_arrow(target, value)
        body = encode_parquet(target, table, compression=compression)
        if self.s3 is not None:
            location, key = self.s3.locate(self._s3_target(target))
            uri = f"s3://{location.bucket}/{key}"
            self.s3.put_body(target, location, key, body)
        else:
            path = self.path_for(target)
            try:
                write_atomically(path, body)
            except OSError as exc:
                raise file_error(target, self.path_for(target), "write", exc) from exc
            uri = path.resolve().as_uri()
        return StoredOutput(
            uri=uri,
            size_bytes=len(body),
            row_count=table.num_rows,
            content_hash=hash_content(body),
        )

    def load(self, target: IOTarget) -> Any:
        """Read the Parquet file as a pyarrow Table (or a pandas DataFrame with ``as_pandas``)."""
        self._compression(target)
        if self.s3 is not None:
            return self.s3.load(self._s3_target(target))
        path = self.path_for(target)
        try:
            body = path.read_bytes()
        except FileNotFoundError as exc:
            raise IOManagerError(
                f"no stored value at {path}",
                asset=target.asset,
                partition=target.partition_key,
                retryable=False,
            ) from exc
        except OSError as exc:
            raise file_error(target, self.path_for(target), "read", exc) from exc
        return decode_parquet(target, body, as_pandas=self.as_pandas)

    def exists(self, target: IOTarget) -> bool:
        """Whether the partition's Parquet file exists."""
        if self.s3 is not None:
            return self.s3.exists(self._s3_target(target))
        return self.path_for(target).is_file()

    def delete(self, target: IOTarget) -> None:
        """Remove the partition's Parquet file, if any."""
        if self.s3 is not None:
            self.s3.delete(self._s3_target(target))
            return
        try:
            self.path_for(target).unlink(missing_ok=True)
        except OSError as exc:
            raise file_error(target, self.path_for(target), "delete", exc) from exc

    def discard(self, target: IOTarget) -> None:
        """Remove the file or object a stale attempt wrote (its version only)."""
        self.delete(target)
