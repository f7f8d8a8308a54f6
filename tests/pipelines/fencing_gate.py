"""An automated checkpoint whose first store fails: for the fencing tests (with ``fencing``).

Configure ``IO_MANAGERS["flaky"]`` as ``FailsFirstStoreIOManager``.
"""

from __future__ import annotations

from typing import Any

from flowstone import AssetContext, RetryPolicy, asset
from flowstone.checkpoints import Approve, checkpoint
from flowstone.errors import IOManagerError
from flowstone.io.base import IOTarget, StoredOutput
from flowstone.io.memory import MemoryIOManager
from tests.pipelines.fencing import as_rows


class FailsFirstStoreIOManager(MemoryIOManager):
    """A memory IO manager whose first store of each asset fails as a transient error would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: set[str] = set()

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Fail once per asset (retryable), then store."""
        if target.asset not in self.failed:
            self.failed.add(target.asset)
            raise IOManagerError("the store timed out", asset=target.asset, retryable=True)
        return super().store(target, value)


@checkpoint(condition=lambda _review: True, decide=lambda _review: Approve())
@asset(io_manager="flaky", retry_policy=RetryPolicy(max_retries=1, backoff_seconds=0.01))
def v_gated(context: AssetContext, v_source: Any) -> list[dict[str, int]]:
    """Approved automatically; its first store fails, so a second attempt decides again."""
    return [{"attempt": context.attempt, "read": int(as_rows(v_source)[0]["attempt"])}]
