"""Step and run statuses (the vocabulary of SPEC section 13) and how a run's status is derived."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable


class StepStatus(StrEnum):
    """The state of one step (one materialization row)."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    WAITING_APPROVAL = "waiting_approval"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELED = "canceled"


class RunStatus(StrEnum):
    """The state of a run, derived from its steps."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"


class RunKind(StrEnum):
    """Which API call created a run."""

    MATERIALIZE = "materialize"
    MATERIALIZE_ALL = "materialize_all"
    BACKFILL = "backfill"


TERMINAL_STEP_STATUSES: Final = frozenset(
    {StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.UPSTREAM_FAILED, StepStatus.CANCELED}
)
FAILED_STEP_STATUSES: Final = frozenset({StepStatus.FAILED, StepStatus.UPSTREAM_FAILED})
TERMINAL_RUN_STATUSES: Final = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED})


def derive_run_status(step_statuses: Iterable[str]) -> RunStatus:
    """Return a run's status from its steps' statuses.

    Unfinished work wins over finished work; among finished runs a failure wins over a
    cancellation, which wins over success. A run without steps has succeeded trivially.
    """
    statuses = {StepStatus(s) for s in step_statuses}
    if statuses & {StepStatus.RUNNING, StepStatus.QUEUED}:
        return RunStatus.RUNNING
    if StepStatus.WAITING_APPROVAL in statuses:
        return RunStatus.WAITING_APPROVAL
    if StepStatus.PENDING in statuses:
        return RunStatus.PENDING if statuses == {StepStatus.PENDING} else RunStatus.RUNNING
    if statuses & FAILED_STEP_STATUSES:
        return RunStatus.FAILED
    if StepStatus.CANCELED in statuses:
        return RunStatus.CANCELED
    return RunStatus.SUCCESS
