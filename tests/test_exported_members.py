"""Pin the public API."""

from __future__ import annotations

import flowstone
import flowstone.io
import flowstone.partitions


def test_flowstone_all() -> None:
    assert flowstone.__all__ == [
        "DEFAULT_RETRY_POLICY",
        "AssetContext",
        "AssetSpec",
        "BaseResource",
        "FlowStoneError",
        "RetryPolicy",
        "RunHandle",
        "RunResult",
        "StepResult",
        "__version__",
        "asset",
        "backfill",
        "backfill_async",
        "errors",
        "load_value",
        "materialize",
        "materialize_all",
        "materialize_all_async",
        "materialize_async",
        "reexecute",
        "reexecute_async",
    ]
    for name in flowstone.__all__:
        assert getattr(flowstone, name) is not None


def test_version() -> None:
    assert flowstone.__version__ == "0.2.0"


def test_io_all() -> None:
    assert flowstone.io.__all__ == [
        "DiscardsVersions",
        "Fence",
        "FilesystemIOManager",
        "IOManager",
        "IOTarget",
        "MemoryIOManager",
        "StoredOutput",
    ]
