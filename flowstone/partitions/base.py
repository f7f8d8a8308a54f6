"""The partitions definition base class and the store that holds dynamic partition keys."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol

from flowstone.errors import PartitionKeyError
from flowstone.partitions.codec import check_key_text, decode_partition_key, encode_partition_key

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from datetime import datetime

    from flowstone.partitions.codec import PartitionValue


class DynamicKeyStore(Protocol):
    """Where the keys of ``DynamicPartitions`` live; the Django app backs it with a table."""

    def get_keys(self, name: str) -> Sequence[str]:
        """Return the keys added under ``name``, oldest first."""
        ...

    def add_keys(self, name: str, keys: Sequence[str]) -> None:
        """Add ``keys`` under ``name``; keys that are already there are left as they are."""
        ...


class MemoryDynamicKeyStore:
    """An in-memory ``DynamicKeyStore``: the reference implementation and the test double."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, None]] = {}

    def get_keys(self, name: str) -> Sequence[str]:
        """Return the keys added under ``name``, oldest first."""
        return tuple(self._keys.get(name, {}))

    def add_keys(self, name: str, keys: Sequence[str]) -> None:
        """Add ``keys`` under ``name``, skipping the ones already there."""
        if isinstance(keys, str):
            msg = f"add_keys() takes a sequence of keys, not the single str {keys!r}"
            raise PartitionKeyError(msg)
        checked = [check_key_text(key, what="dynamic partition key") for key in keys]
        if "" in checked:
            msg = f"dynamic partitions {name!r}: a key cannot be the empty string"
            raise PartitionKeyError(msg)
        bucket = self._keys.setdefault(name, {})
        bucket.update(dict.fromkeys(checked))

    def __repr__(self) -> str:
        return f"MemoryDynamicKeyStore({ {name: list(keys) for name, keys in self._keys.items()} })"


class PartitionsDefinition(ABC):
    """How an asset is split into partitions: which values exist and how users write them."""

    __slots__ = ()

    @abstractmethod
    def keys(
        self, *, store: DynamicKeyStore | None = None, now: datetime | None = None
    ) -> list[PartitionValue]:
        """Return every partition value, in order.

        ``store`` holds dynamic keys; ``now`` (aware, default: the current time) bounds open-ended
        time windows.
        """

    def iter_keys(
        self, *, store: DynamicKeyStore | None = None, now: datetime | None = None
    ) -> Iterator[PartitionValue]:
        """Yield every partition value, in order, like ``keys``.

        Definitions that can generate their values one at a time (time windows) override it, so
        a backfill of every partition does not hold them all at once.
        """
        return iter(self.keys(store=store, now=now))

    @abstractmethod
    def validate(self, value: object, *, store: DynamicKeyStore | None = None) -> PartitionValue:
        """Return ``value`` normalized if it is one of the partitions, else raise.

        Raises ``PartitionKeyError`` when the value has the wrong type or is not a member.
        """

    def describe(self) -> str:
        """Say which partitions these are in a few words, for messages.

        For example ``daily partitions from 2025-12-01`` or ``static partitions eu, us``; the
        kinds override it, a custom definition is named by its class.
        """
        return type(self).__name__

    @abstractmethod
    def parse(self, text: str) -> PartitionValue:
        """Turn the text a user types (on the command line, in the admin) into a partition value."""

    def encode_key(self, value: object, *, store: DynamicKeyStore | None = None) -> str:
        """Validate a partition value and return its encoded partition key."""
        return encode_partition_key(self.validate(value, store=store))

    def decode_key(self, key: str, *, store: DynamicKeyStore | None = None) -> PartitionValue:
        """Decode a partition key and validate the value against this definition."""
        value = decode_partition_key(key)
        if value is None:
            msg = f"{self.describe()}: the empty key (unpartitioned) is not one of them"
            raise PartitionKeyError(msg, partition=key)
        try:
            return self.validate(value, store=store)
        except PartitionKeyError as exc:
            exc.with_context(partition=key)
            raise
