"""Dynamic partitions: string keys added at run time and kept in a ``DynamicKeyStore``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from flowstone.errors import DefinitionError, PartitionKeyError
from flowstone.partitions.base import PartitionsDefinition
from flowstone.partitions.codec import check_key_text

if TYPE_CHECKING:
    from datetime import datetime

    from flowstone.partitions.base import DynamicKeyStore
    from flowstone.partitions.codec import PartitionValue

DYNAMIC_PARTITIONS_NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
"""What a dynamic partitions name looks like (it is stored in a 128-character column)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DynamicPartitions(PartitionsDefinition):
    """String partitions whose keys are added at run time under ``name`` in a key store.

    Listing the keys needs the store. ``validate`` always checks the type and checks membership
    only when it is given a store.
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not DYNAMIC_PARTITIONS_NAME_PATTERN.fullmatch(
            self.name
        ):
            msg = (
                f"DynamicPartitions: invalid name {self.name!r}; names must match "
                f"{DYNAMIC_PARTITIONS_NAME_PATTERN.pattern}"
            )
            raise DefinitionError(msg)

    def describe(self) -> str:
        """``dynamic partitions 'customers'``."""
        return f"dynamic partitions {self.name!r}"

    def keys(
        self,
        *,
        store: DynamicKeyStore | None = None,
        now: datetime | None = None,
    ) -> list[PartitionValue]:
        """Return the keys added so far, oldest first; ``store`` is required."""
        del now  # the shared signature; dynamic keys do not depend on time
        return list(self._store_keys(self._require(store)))

    def validate(self, value: object, *, store: DynamicKeyStore | None = None) -> PartitionValue:
        """Return ``value`` if it is a valid key (and, given a store, one that was added)."""
        key = check_key_text(value, what=f"partition of {self.describe()}")
        if not key:
            msg = f"{self.describe()}: a key cannot be the empty string"
            raise PartitionKeyError(msg)
        if store is not None and key not in self._store_keys(store):
            msg = f"{key!r} has not been added to {self.describe()}"
            raise PartitionKeyError(msg)
        return key

    def parse(self, text: str) -> PartitionValue:
        """Return the key itself (membership is checked later, against the store)."""
        return self.validate(text)

    def _require(self, store: DynamicKeyStore | None) -> DynamicKeyStore:
        """Return ``store``, or raise when the caller did not give one."""
        if store is None:
            msg = f"listing the keys of {self.describe()} needs a DynamicKeyStore (pass store=...)"
            raise PartitionKeyError(msg)
        return store

    def _store_keys(self, store: DynamicKeyStore) -> tuple[str, ...]:
        """Return the keys the store holds under this definition's name."""
        return tuple(store.get_keys(self.name))
