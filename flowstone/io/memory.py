"""The in-memory IO manager: the reference implementation and the test double."""

from __future__ import annotations

import threading
from typing import Any

from flowstone.errors import IOManagerError
from flowstone.io.base import IOTarget, StoredOutput, decode_json, describe_output, encode_json


class MemoryIOManager:
    """Keeps values in this process as JSON bytes, so every load returns a fresh copy."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _uri(target: IOTarget) -> str:
        version = f"@{target.version}" if target.version else ""
        return f"memory://{target.asset}/{target.partition_key}{version}"

    @staticmethod
    def _key(target: IOTarget) -> tuple[str, str, str]:
        return (target.asset, target.partition_key, target.version)

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Store ``value``, replacing any earlier one for the same target (and version)."""
        body = encode_json(target, value)
        with self._lock:
            self._values[self._key(target)] = body
        return describe_output(self._uri(target), value, body)

    def load(self, target: IOTarget) -> Any:
        """Return the stored value."""
        with self._lock:
            body = self._values.get(self._key(target))
        if body is None:
            raise IOManagerError(
                f"no stored value for {self._uri(target)}",
                asset=target.asset,
                partition=target.partition_key,
            )
        return decode_json(target, body)

    def exists(self, target: IOTarget) -> bool:
        """Whether a value is stored."""
        with self._lock:
            return self._key(target) in self._values

    def delete(self, target: IOTarget) -> None:
        """Forget the stored value."""
        with self._lock:
            self._values.pop(self._key(target), None)

    def discard(self, target: IOTarget) -> None:
        """Forget what a stale attempt stored (its version only)."""
        self.delete(target)
