"""Static partitions: a fixed, ordered list of string keys declared in code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from flowstone.errors import DefinitionError, PartitionKeyError
from flowstone.partitions.base import PartitionsDefinition
from flowstone.partitions.codec import check_key_text, format_partition_value

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from flowstone.partitions.base import DynamicKeyStore
    from flowstone.partitions.codec import PartitionValue

_DESCRIBED_KEYS: Final = 10
"""How many keys a message names before it says how many more there are."""


@dataclass(frozen=True, kw_only=True, slots=True, init=False, repr=False)
class StaticPartitions(PartitionsDefinition):
    """Partitions named by a fixed list of strings, e.g. ``StaticPartitions(keys=("eu", "us"))``.

    Keys are non-empty strings without NUL, unique, in the order given.
    """

    partition_keys: tuple[str, ...]
    _key_set: frozenset[str] = field(compare=False)  # O(1) membership for ``validate``

    # The constructor argument is ``keys`` while the attribute is ``partition_keys``: ``keys()`` is
    # the method every PartitionsDefinition has, so a field cannot take that name.
    def __init__(self, *, keys: Iterable[str]) -> None:
        if isinstance(keys, str):
            msg = f"StaticPartitions(keys=...) takes a sequence of strings, not the str {keys!r}"
            raise DefinitionError(msg)
        try:
            checked = tuple(check_key_text(key, what="static partition key") for key in keys)
        except PartitionKeyError as exc:
            msg = f"StaticPartitions: {exc.message}"
            raise DefinitionError(msg) from exc
        if not checked:
            msg = "StaticPartitions needs at least one key"
            raise DefinitionError(msg)
        if "" in checked:
            msg = "StaticPartitions: a key cannot be the empty string"
            raise DefinitionError(msg)
        duplicates = sorted(key for key, count in Counter(checked).items() if count > 1)
        if duplicates:
            msg = f"StaticPartitions: duplicate keys {duplicates!r}"
            raise DefinitionError(msg)
        object.__setattr__(self, "partition_keys", checked)
        object.__setattr__(self, "_key_set", frozenset(checked))

    def __repr__(self) -> str:
        return f"StaticPartitions(keys={self.partition_keys!r})"

    def describe(self) -> str:
        """``static partitions eu, us`` (the first keys, then how many more)."""
        shown = ", ".join(self.partition_keys[:_DESCRIBED_KEYS])
        more = len(self.partition_keys) - _DESCRIBED_KEYS
        return f"static partitions {shown}" + (f" and {more} more" if more > 0 else "")

    def keys(
        self,
        *,
        store: DynamicKeyStore | None = None,
        now: datetime | None = None,
    ) -> list[PartitionValue]:
        """Return the keys in declaration order."""
        del store, now  # the shared signature; static keys need neither
        return list(self.partition_keys)

    def validate(
        self,
        value: object,
        *,
        store: DynamicKeyStore | None = None,
    ) -> PartitionValue:
        """Return ``value`` if it is one of the keys, else raise ``PartitionKeyError``."""
        del store  # the shared signature; static keys need no store
        if not isinstance(value, str):
            msg = (
                f"{self.describe()} take str partition values, got {type(value).__name__} "
                f"({format_partition_value(value)})"
            )
            raise PartitionKeyError(msg)
        plain = str.__str__(value)
        if plain not in self._key_set:
            msg = f"{plain!r} is not one of the {self.describe()}"
            raise PartitionKeyError(msg)
        return plain

    def parse(self, text: str) -> PartitionValue:
        """Return the key itself: the text is the key."""
        return self.validate(text)
