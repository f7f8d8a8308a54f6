"""``RunHandle``: what the asynchronous API returns for a run that workers execute."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from assets import services
from flowstone.errors import FlowStoneError
from flowstone.execution.inprocess import load_run_result
from flowstone.status import TERMINAL_RUN_STATUSES, RunStatus

if TYPE_CHECKING:
    from flowstone.results import RunResult

FIRST_WAIT_INTERVAL: Final = 0.02
MAX_WAIT_INTERVAL: Final = 0.5


class RunWaitTimeoutError(FlowStoneError):
    """``RunHandle.wait`` gave up before the run ended (the run itself goes on)."""

    default_kind = "timeout"


@dataclass(frozen=True, slots=True)
class RunHandle:
    """A run's id and ways to look at it; the same type whether or not a worker is running."""

    run_id: str

    def status(self) -> RunStatus:
        """The run's current status, read from the database."""
        return RunStatus(services.get_run(self.run_id).status)

    def result(self) -> RunResult:
        """The run as recorded now (steps may still be running)."""
        return load_run_result(uuid.UUID(self.run_id))

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait until the run ends and return its result; ``RunWaitTimeoutError`` after ``timeout``.

        The caller re-reads the run's row with a growing interval (20 ms up to 500 ms); workers
        never wait on anything.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = FIRST_WAIT_INTERVAL
        while self.status() not in TERMINAL_RUN_STATUSES:
            if deadline is not None and time.monotonic() >= deadline:
                raise RunWaitTimeoutError(
                    f"run {self.run_id} did not end within {timeout} s", run_id=self.run_id
                )
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            time.sleep(interval if remaining is None else min(interval, remaining))
            interval = min(interval * 2, MAX_WAIT_INTERVAL)
        return self.result()

    def cancel(self, *, actor: str = "") -> int:
        """Cancel the run's steps that have not started; return how many were canceled."""
        return services.cancel_run(self.run_id, actor=actor)
