"""IO managers: the protocol and the built-in memory and filesystem managers."""

from __future__ import annotations

from flowstone.io.base import DiscardsVersions, Fence, IOManager, IOTarget, StoredOutput
from flowstone.io.filesystem import FilesystemIOManager
from flowstone.io.memory import MemoryIOManager

__all__ = [
    "DiscardsVersions",
    "Fence",
    "FilesystemIOManager",
    "IOManager",
    "IOTarget",
    "MemoryIOManager",
    "StoredOutput",
]
