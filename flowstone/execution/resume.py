"""Continuing an in-process run after an approval decision: the step is ``queued`` again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowstone.execution.inprocess import run_in_process
from flowstone.registry import get_registry

if TYPE_CHECKING:
    from approvals.services import Continuation


def continue_after_decision(continuation: Continuation | None) -> None:
    """Execute a decided step of an in-process run here; a worker run's step is already sent.

    ``None`` is a vote that did not complete its quorum: nothing continues yet.

    An in-process run has no worker to hand its steps to, so the process that decides executes
    the step's continuation and whatever it releases. For a worker run the engine published the
    step when the decision committed. A decision that ended the step (a ``skip`` option) leaves
    nothing to execute.
    """
    if continuation is not None and continuation.is_in_process and continuation.is_resumed:
        run_in_process(
            get_registry(), continuation.run_id, [continuation.step_id], include_values=False
        )
