"""An upstream stored by a manager that keeps one value per partition (as the PostgreSQL
manager does), for re-execution: configure ``IO_MANAGERS["latest_only"]`` with the class below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowstone import AssetContext, asset
from flowstone.errors import IOManagerError
from flowstone.io.base import IOTarget, StoredOutput, decode_json, describe_output, encode_json


class LatestOnlyIOManager:
    """One value per asset partition: a later store replaces it, whatever the version."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], bytes] = {}

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Store ``value`` in the partition's one place."""
        body = encode_json(target, value)
        self._values[(target.asset, target.partition_key)] = body
        return describe_output(f"latest://{target.asset}/{target.partition_key}", value, body)

    def load(self, target: IOTarget) -> Any:
        """The partition's current value."""
        body = self._values.get((target.asset, target.partition_key))
        if body is None:
            raise IOManagerError(f"nothing stored for {target.asset}[{target.partition_key}]")
        return decode_json(target, body)

    def exists(self, target: IOTarget) -> bool:
        """Whether the partition has a value."""
        return (target.asset, target.partition_key) in self._values

    def delete(self, target: IOTarget) -> None:
        """Forget the partition's value."""
        self._values.pop((target.asset, target.partition_key), None)


@asset(io_manager="latest_only")
def l_table(context: AssetContext) -> str:
    return f"table@{context.run_id}"


@asset
def l_report(l_table: str) -> str:
    flag = os.environ.get("REEXEC_FAIL_FILE")
    if flag and Path(flag).exists():
        raise RuntimeError("the report service is down")
    return f"report({l_table})"
