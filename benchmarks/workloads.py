"""The benchmark graphs, shared by every system: names, upstreams and partition keys.

Pure Python (no Django, no Celery), so the FlowStone definitions, the Celery baselines, the
Dagster script and the harness all build the same graphs from the same code.

- ``single``: one asset with N partitions (a backfill of N steps).
- ``diamond``: ten assets, each with the same N partitions: ``d0`` fans out to ``d1``..``d4``,
  ``d5``..``d8`` each read two of those, ``d9`` reads ``d5``..``d8`` (16 edges); one run per
  partition materializes all ten.
- ``chain``: ten unpartitioned assets ``c0 -> c1 -> ... -> c9``, run R times one after another
  (the latency workload).

Bodies: ``noop`` returns a small dict at once, ``sleep`` sleeps 10 ms first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

BODIES: Final = ("noop", "sleep")
SHAPES: Final = ("single", "diamond", "chain")
SLEEP_SECONDS: Final = 0.010
DIAMOND_UPSTREAMS: Final[dict[int, tuple[int, ...]]] = {
    0: (),
    1: (0,),
    2: (0,),
    3: (0,),
    4: (0,),
    5: (1, 2),
    6: (2, 3),
    7: (3, 4),
    8: (4, 1),
    9: (5, 6, 7, 8),
}
CHAIN_LENGTH: Final = 10


def run_body(body: str) -> dict[str, int]:
    """What every asset and task of the benchmark computes: nothing, or a 10 ms sleep."""
    if body == "sleep":
        time.sleep(SLEEP_SECONDS)
    return {"value": 1}


def partition_keys(count: int) -> list[str]:
    """``count`` static partition keys: ``p000000``, ``p000001`` ..."""
    return [f"p{i:06d}" for i in range(count)]


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """One graph and body; ``count`` is partitions (single, diamond) or runs (chain)."""

    shape: str
    body: str
    count: int

    @property
    def name(self) -> str:
        """E.g. ``single-noop``."""
        return f"{self.shape}-{self.body}"

    @property
    def assets(self) -> tuple[str, ...]:
        """The workload's assets in dependency order."""
        return assets_of(self.shape, self.body)

    @property
    def upstreams(self) -> dict[str, tuple[str, ...]]:
        """Each asset's upstream assets (same partition)."""
        return upstreams_of(self.shape, self.body)

    @property
    def downstreams(self) -> dict[str, tuple[str, ...]]:
        """Each asset's downstream assets (same partition)."""
        return downstreams_of(self.shape, self.body)

    @property
    def steps(self) -> int:
        """How many materializations the workload makes."""
        return self.count * len(self.assets)

    @property
    def partitioned(self) -> bool:
        """Whether the graph is partitioned (the chain is not)."""
        return self.shape != "chain"


def asset_name(shape: str, body: str, index: int = 0) -> str:
    """The asset at ``index`` of a graph, e.g. ``diamond_noop_3`` (``single_noop`` for single)."""
    return f"{shape}_{body}" if shape == "single" else f"{shape}_{body}_{index}"


def assets_of(shape: str, body: str) -> tuple[str, ...]:
    """The assets of a graph in dependency order."""
    if shape == "single":
        return (asset_name(shape, body),)
    size = len(DIAMOND_UPSTREAMS) if shape == "diamond" else CHAIN_LENGTH
    return tuple(asset_name(shape, body, i) for i in range(size))


def upstreams_of(shape: str, body: str) -> dict[str, tuple[str, ...]]:
    """Each asset's upstream assets in the graph."""
    if shape == "single":
        return {asset_name(shape, body): ()}
    if shape == "diamond":
        return {
            asset_name(shape, body, i): tuple(asset_name(shape, body, u) for u in ups)
            for i, ups in DIAMOND_UPSTREAMS.items()
        }
    return {
        asset_name(shape, body, i): (asset_name(shape, body, i - 1),) if i else ()
        for i in range(CHAIN_LENGTH)
    }


def downstreams_of(shape: str, body: str) -> dict[str, tuple[str, ...]]:
    """Each asset's downstream assets in the graph."""
    ups = upstreams_of(shape, body)
    return {name: tuple(d for d, its in ups.items() if name in its) for name in ups}
