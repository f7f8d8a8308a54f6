"""Continuing a run after an approval decision: the step is ``queued`` again; dispatch it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowstone.execution.dispatch import publish_after_commit
from flowstone.execution.inprocess import run_in_process
from flowstone.registry import get_registry

if TYPE_CHECKING:
    from approvals.services import Continuation


def continue_after_decision(continuation: Continuation) -> None:
    """Dispatch a decided step: to the workers, or here for an in-process run.

    An in-process run has no worker to hand its steps to, so the process that decides executes
    the step's continuation and whatever it releases.
    """
    if continuation.is_in_process:
        run_in_process(
            get_registry(), continuation.run_id, [continuation.step_id], include_values=False
        )
        return
    publish_after_commit([continuation.step_id])
