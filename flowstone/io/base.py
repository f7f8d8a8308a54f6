"""The IO manager protocol: how an asset's value is stored and loaded for one partition."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flowstone.errors import IOManagerError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping


@dataclass(frozen=True, kw_only=True, slots=True)
class IOTarget:
    """Where one step's output lives: asset name, encoded partition key and IO options."""

    asset: str
    partition_key: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredOutput:
    """What an IO manager reports after storing a value; recorded on the materialization."""

    uri: str
    size_bytes: int | None = None
    row_count: int | None = None
    content_hash: str | None = None

    def as_metadata(self) -> dict[str, Any]:
        """Return the JSON form stored in ``Materialization.metadata``."""
        return {
            "uri": self.uri,
            "size_bytes": self.size_bytes,
            "row_count": self.row_count,
            "content_hash": self.content_hash,
        }


@runtime_checkable
class IOManager(Protocol):
    """Stores and loads asset values; ``store`` of the same target overwrites, never duplicates."""

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Store ``value`` for ``target`` and describe where it went."""
        ...

    def load(self, target: IOTarget) -> Any:
        """Return the value stored for ``target``; raise ``IOManagerError`` if there is none."""
        ...

    def exists(self, target: IOTarget) -> bool:
        """Whether a value is stored for ``target``."""
        ...

    def delete(self, target: IOTarget) -> None:
        """Remove the value stored for ``target``, if any."""
        ...


@runtime_checkable
class ValidatesOptions(Protocol):
    """An IO manager that checks an asset's ``io_options`` when definitions are validated.

    Optional: managers without ``validate_options`` accept any options. Each returned string is
    one problem (``flowstone.E009``); an empty list means the options are valid.
    """

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        """Return one message per problem with ``options``; empty when they are valid."""
        ...


def unknown_option_problems(options: Mapping[str, Any], known: Collection[str]) -> list[str]:
    """Name every key of ``options`` that is not in ``known`` (typos must not pass silently)."""
    listed = ", ".join(sorted(known)) or "none"
    return [
        f"unknown option {key!r} (known: {listed})"
        for key in sorted(options, key=str)
        if key not in known
    ]


def invalid_options_error(target: IOTarget, problems: Collection[str]) -> IOManagerError:
    """The non-retryable error for options that reach ``store``/``load`` invalid (run overrides)."""
    return IOManagerError(
        f"invalid IO options for asset {target.asset!r}: " + "; ".join(problems),
        asset=target.asset,
        partition=target.partition_key,
        retryable=False,
    )


def hash_content(body: bytes) -> str:
    """The content hash recorded on a materialization: ``sha256:<hex digest>``."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def encode_json(target: IOTarget, value: Any) -> bytes:
    """Serialize ``value`` as canonical JSON, or raise a non-retryable ``IOManagerError``."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise IOManagerError(
            f"the value of asset {target.asset!r} is not JSON-serializable ({exc}); return "
            "JSON data or configure an IO manager that stores this type",
            asset=target.asset,
            partition=target.partition_key,
        ) from exc


def decode_json(target: IOTarget, data: bytes) -> Any:
    """Parse JSON written by ``encode_json``; a corrupt body is a non-retryable IO error."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise IOManagerError(
            f"stored value of asset {target.asset!r} is not valid JSON: {exc}",
            asset=target.asset,
            partition=target.partition_key,
        ) from exc


def describe_output(uri: str, value: Any, body: bytes) -> StoredOutput:
    """Build the metadata of a stored body: size, SHA-256 and row count of list values."""
    return StoredOutput(
        uri=uri,
        size_bytes=len(body),
        row_count=len(value) if isinstance(value, list) else None,
        content_hash=hash_content(body),
    )
