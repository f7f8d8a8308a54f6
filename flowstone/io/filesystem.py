"""The local-filesystem IO manager, the embedded default: a JSON file per partition version."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from flowstone.errors import IOManagerError
from flowstone.io.base import (
    IOTarget,
    StoredOutput,
    decode_json,
    describe_output,
    encode_json,
)

DEFAULT_BASE_DIR: Final = Path("var") / "storage"
UNPARTITIONED_FILE_STEM: Final = "__unpartitioned__"
MAX_FILE_STEM_LENGTH: Final = 180
VERSION_SEPARATOR: Final = "@"  # percent-encoded in partition stems, so it never occurs in one


def partition_file_stem(partition_key: str) -> str:
    """Turn an encoded partition key into a safe, injective file name stem.

    Keys are percent-encoded (no ``/``, no ``..``); a key too long for a file name is replaced by
    its SHA-256, and an empty key (unpartitioned) gets a fixed name no encoded key can take.
    """
    if partition_key == "":
        return UNPARTITIONED_FILE_STEM
    stem = quote(partition_key, safe="-_")
    if len(stem) > MAX_FILE_STEM_LENGTH:
        return "sha256-" + hashlib.sha256(partition_key.encode()).hexdigest()
    return stem


def file_stem(target: IOTarget) -> str:
    """The file name stem (or object key segment) of ``target``: its partition, then its version.

    ``<partition stem>@<version>``, or the partition stem alone for an unversioned target; a
    partition stem never contains the separator, so every (partition, version) has its own name.
    """
    stem = partition_file_stem(target.partition_key)
    return f"{stem}{VERSION_SEPARATOR}{target.version}" if target.version else stem


def write_atomically(path: Path, body: bytes) -> None:
    """Write ``body`` to a temporary file beside ``path``, fsync it, then rename it into place.

    Readers see the old or the new content, never a torn file; the temporary file is removed if
    anything fails. Raises ``OSError``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp_name).replace(path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def file_error(target: IOTarget, path: Path, action: str, exc: OSError) -> IOManagerError:
    """A local file could not be written, read or deleted: not retryable (disk, permissions)."""
    return IOManagerError(
        f"could not {action} {path}: {exc.strerror or exc}",
        asset=target.asset,
        partition=target.partition_key,
        retryable=False,
    )


class FilesystemIOManager:
    """Stores JSON values under ``base_dir/<asset>/<partition>@<version>.json``, atomically.

    Each step attempt writes a file of its own (the version names the attempt) and the success
    row records which one is the value, so an attempt that lost its lease cannot replace it.
    An unversioned target uses ``<partition>.json``.
    """

    def __init__(self, base_dir: str | os.PathLike[str] = DEFAULT_BASE_DIR) -> None:
        self.base_dir = Path(base_dir)

    def path_for(self, target: IOTarget) -> Path:
        """Return the file that holds ``target``'s value."""
        return self.base_dir / target.asset / f"{file_stem(target)}.json"

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Write the value to a temporary file, fsync it, then rename it into place."""
        body = encode_json(target, value)
        path = self.path_for(target)
        try:
            write_atomically(path, body)
        except OSError as exc:
            raise file_error(target, self.path_for(target), "write", exc) from exc
        return describe_output(path.resolve().as_uri(), value, body)

    def load(self, target: IOTarget) -> Any:
        """Read and parse the stored JSON value."""
        path = self.path_for(target)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise file_error(target, self.path_for(target), "read", exc) from exc
        return decode_json(target, body)

    def exists(self, target: IOTarget) -> bool:
        """Whether the value's file exists."""
        return self.path_for(target).is_file()

    def delete(self, target: IOTarget) -> None:
        """Remove the value's file, if any."""
        try:
            self.path_for(target).unlink(missing_ok=True)
        except OSError as exc:
            raise file_error(target, self.path_for(target), "delete", exc) from exc

    def discard(self, target: IOTarget) -> None:
        """Remove the file a stale attempt wrote (its version only)."""
        self.delete(target)
