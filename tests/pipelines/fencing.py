"""Assets for the fencing tests: every attempt of ``v_source`` returns a value of its own.

``v_source`` writes ``source-<attempt>.pid`` (its process id) to ``$FLOWSTONE_DATA_DIR`` and,
on its first attempt, sleeps ``$FLOWSTONE_TEST_FIRST_SLEEP`` seconds (default 0): long enough
for a test to stop that process past its lease. ``v_sink`` records which attempt it read.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flowstone import AssetContext, asset
from flowstone.io.base import IOTarget, StoredOutput


def _data_dir() -> Path:
    return Path(os.environ.get("FLOWSTONE_DATA_DIR", "var"))


def attempt_rows(attempt: int) -> list[dict[str, int]]:
    """The value attempt ``attempt`` of ``v_source`` stores: rows, so every manager takes it."""
    return [{"attempt": attempt}]


@asset
def v_source(context: AssetContext) -> list[dict[str, int]]:
    directory = _data_dir()
    if directory.is_dir():
        (directory / f"source-{context.attempt}.pid").write_text(str(os.getpid()))
    if context.attempt == 1:
        time.sleep(float(os.environ.get("FLOWSTONE_TEST_FIRST_SLEEP", "0")))
    return attempt_rows(context.attempt)


def as_rows(value: Any) -> list[dict[str, Any]]:
    """Rows of a loaded value: a list as is, a pyarrow Table through ``to_pylist``."""
    if hasattr(value, "to_pylist"):
        return list(value.to_pylist())
    return list(value)


@asset
def v_sink(v_source: Any) -> list[dict[str, int]]:
    return [{"read": int(as_rows(v_source)[0]["attempt"])}]


class UnfencedIOManager:
    """A custom IO manager that keeps one value per partition and holds no fence (W004)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        self.values[(target.asset, target.partition_key)] = value
        return StoredOutput(uri=f"unfenced://{target.asset}/{target.partition_key}")

    def load(self, target: IOTarget) -> Any:
        return self.values[(target.asset, target.partition_key)]

    def exists(self, target: IOTarget) -> bool:
        return (target.asset, target.partition_key) in self.values

    def delete(self, target: IOTarget) -> None:
        self.values.pop((target.asset, target.partition_key), None)
