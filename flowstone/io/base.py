"""The IO manager protocol: how an asset's value is stored and loaded for one partition."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from flowstone.errors import IOManagerError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

# A version names one step attempt's value (``<step id>.<attempt>``); it goes into file names and
# object keys, so it is restricted to characters that are safe in both.
VERSION_PATTERN: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}")


class Fence(Protocol):
    """The lease of the step attempt that is storing a value (see ``IOTarget.fence``)."""

    def hold(self, using: str) -> bool:
        """Check the attempt still holds its lease, and keep it until ``using``'s transaction ends.

        Call it inside the transaction (on Django database alias ``using``) that writes the
        value. Returns ``False`` if ``using`` is not the database the steps live in (nothing can
        be held there); raises ``LeaseLostError`` if the attempt lost its lease, so the write
        rolls back.
        """
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class IOTarget:
    """Where one step's output lives: asset name, encoded partition key, IO options, version.

    ``version`` names the step attempt that stores the value, or the attempt whose recorded
    value is loaded; ``""`` is the unversioned location (direct calls, values recorded before
    versions existed). ``fence`` is set when a step attempt stores: managers that overwrite one
    location per partition hold it in their write transaction instead of versioning.
    """

    asset: str
    partition_key: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    version: str = ""
    fence: Fence | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.version and not VERSION_PATTERN.fullmatch(self.version):
            raise IOManagerError(
                f"invalid value version {self.version!r}: up to 64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit",
                asset=self.asset,
                partition=self.partition_key,
            )


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
class DiscardsVersions(Protocol):
    """An IO manager that stores each ``IOTarget.version`` at a location of its own.

    FlowStone's fencing rule (ADR 0023): a step attempt stores at its own version, the success
    row records that version, and readers load the recorded version, so a value stored by an
    attempt that lost its lease is never read. When the attempt finds it lost, FlowStone calls
    ``discard`` to remove what it stored.
    """

    def discard(self, target: IOTarget) -> None:
        """Remove the value stored for ``target.version`` (never another version's)."""
        ...


@runtime_checkable
class HoldsFence(Protocol):
    """An IO manager that keeps one location per partition and holds ``IOTarget.fence`` instead.

    Its writes happen in a transaction of the database the steps live in, and it calls
    ``target.fence.hold(alias)`` in that transaction before writing, so a stale attempt's
    write rolls back. ``can_fence`` says whether this instance can (its database is the
    steps' database).
    """

    def can_fence(self) -> bool:
        """Whether stores hold the storing attempt's lease."""
        ...


def is_fenced(manager: object) -> bool:
    """Whether ``manager`` keeps a stale attempt's value from being read (ADR 0023)."""
    if isinstance(manager, DiscardsVersions):
        return True
    return isinstance(manager, HoldsFence) and manager.can_fence()


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
