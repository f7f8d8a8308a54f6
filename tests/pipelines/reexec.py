"""A chain over static partitions whose middle asset fails while a flag file exists.

``REEXEC_FAIL_FILE`` names the flag file (set it in the test's environment, or in the worker
processes' ``extra_env``); its text is the partitions to fail, one per line (empty: all).
"""

from __future__ import annotations

import os
from pathlib import Path

from flowstone import AssetContext, asset
from flowstone.partitions import StaticPartitions

KEYS = StaticPartitions(keys=("a", "b", "c"))


def _fails(partition: object) -> bool:
    flag = os.environ.get("REEXEC_FAIL_FILE")
    if not flag or not Path(flag).exists():
        return False
    wanted = Path(flag).read_text().split()
    return not wanted or str(partition) in wanted


@asset(partitions=KEYS)
def r_source(context: AssetContext) -> str:
    return f"{context.partition}@{context.run_id}"


@asset(partitions=KEYS)
def r_mid(context: AssetContext, r_source: str) -> str:
    if _fails(context.partition):
        raise RuntimeError(f"the warehouse refused partition {context.partition}")
    return f"mid({r_source})"


@asset(partitions=KEYS)
def r_sink(r_mid: str) -> str:
    return f"sink({r_mid})"


@asset(partitions=KEYS)
def r_side(r_source: str) -> str:
    return f"side({r_source})"
