"""Assets whose steps raise foreign exceptions from every part of a step, for the boundary tests.

Configure with ``IO_MANAGERS`` ``failing_store`` / ``failing_load`` (the classes below) and a
resource ``fragile`` (``CountingResource`` with ``fail_teardown``).
"""

from __future__ import annotations

from typing import Any

from flowstone import asset
from flowstone.io.base import IOTarget, StoredOutput
from flowstone.io.memory import MemoryIOManager


class StoreFailsIOManager(MemoryIOManager):
    """A user's IO manager that raises a plain ``OSError`` when it stores."""

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Fail as a full disk would."""
        raise OSError(28, "No space left on device")


class LoadFailsIOManager(MemoryIOManager):
    """A user's IO manager that stores but raises a plain ``RuntimeError`` when it loads."""

    def load(self, target: IOTarget) -> Any:
        """Fail as a corrupt store would."""
        raise RuntimeError("checksum mismatch")


@asset(io_manager="failing_store")
def b_disk_full() -> int:
    return 1


@asset(io_manager="failing_load")
def b_unreadable() -> int:
    return 1


@asset
def b_reads_unreadable(b_unreadable: int) -> int:
    return b_unreadable


@asset
def b_deep() -> Any:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    return value


@asset
def b_after_deep(b_deep: Any) -> int:
    return len(b_deep)


@asset(resources=["fragile"])
def b_teardown() -> int:
    return 1


@asset
def b_key_error() -> int:
    return {"a": 1}["missing_key"]


@asset
def b_independent() -> int:
    return 7


@asset
def b_join(b_disk_full: int, b_independent: int) -> int:
    return b_disk_full + b_independent
