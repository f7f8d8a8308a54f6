"""Step and run statuses (the vocabulary of SPEC section 13) and how a run's status is derived."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


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
    SKIPPED = "skipped"
    """A reviewer's option skipped this step's branch: it ended without a value, not failed."""


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
    REEXECUTE = "reexecute"


TERMINAL_STEP_STATUSES: Final = frozenset(
    {
        StepStatus.SUCCESS,
        StepStatus.FAILED,
        StepStatus.UPSTREAM_FAILED,
        StepStatus.CANCELED,
        StepStatus.SKIPPED,
    }
)
FAILED_STEP_STATUSES: Final = frozenset({StepStatus.FAILED, StepStatus.UPSTREAM_FAILED})
TERMINAL_RUN_STATUSES: Final = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED})


class StepCount(StrEnum):
    """The counters a run keeps of its steps; each step status counts in exactly one."""

    PENDING = "pending"
    ACTIVE = "active"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    SKIPPED = "skipped"


COUNTER_OF: Final[dict[StepStatus, StepCount]] = {
    StepStatus.PENDING: StepCount.PENDING,
    StepStatus.QUEUED: StepCount.ACTIVE,
    StepStatus.RUNNING: StepCount.ACTIVE,
    StepStatus.WAITING_APPROVAL: StepCount.WAITING,
    StepStatus.SUCCESS: StepCount.SUCCEEDED,
    StepStatus.FAILED: StepCount.FAILED,
    StepStatus.UPSTREAM_FAILED: StepCount.FAILED,
    StepStatus.CANCELED: StepCount.CANCELED,
    StepStatus.SKIPPED: StepCount.SKIPPED,
}
UNFINISHED_COUNTS: Final = frozenset({StepCount.PENDING, StepCount.ACTIVE, StepCount.WAITING})

# The status precedence, first match wins: (status, counters that are all > 0, counters that
# are all 0). A run with no rule matching has succeeded (a run without steps too).
RUN_STATUS_RULES: Final[
    tuple[tuple[RunStatus, frozenset[StepCount], frozenset[StepCount]], ...]
] = (
    # Work is queued for or running on a worker.
    (RunStatus.RUNNING, frozenset({StepCount.ACTIVE}), frozenset()),
    # Nothing runs, and a human decision is what the run waits for.
    (RunStatus.WAITING_APPROVAL, frozenset({StepCount.WAITING}), frozenset()),
    # Nothing has started or ended yet (e.g. every step waits for a concurrency slot).
    (
        RunStatus.PENDING,
        frozenset({StepCount.PENDING}),
        frozenset({StepCount.SUCCEEDED, StepCount.FAILED, StepCount.CANCELED, StepCount.SKIPPED}),
    ),
    # Some steps ended and others wait for a slot.
    (RunStatus.RUNNING, frozenset({StepCount.PENDING}), frozenset()),
    # Every step ended: a failure wins over a cancellation, which wins over success (skipped
    # steps are not failures: a run whose other steps succeeded succeeds).
    (RunStatus.FAILED, frozenset({StepCount.FAILED}), frozenset()),
    (RunStatus.CANCELED, frozenset({StepCount.CANCELED}), frozenset()),
)


def run_status(counts: Mapping[StepCount, int]) -> RunStatus:
    """The one derivation of a run's status, from how many of its steps are in each counter."""
    for status, positive, zero in RUN_STATUS_RULES:
        if all(counts.get(c, 0) > 0 for c in positive) and all(counts.get(c, 0) == 0 for c in zero):
            return status
    return RunStatus.SUCCESS


def count_steps(step_statuses: Iterable[str]) -> dict[StepCount, int]:
    """Count step statuses into the run's counters."""
    counts = dict.fromkeys(StepCount, 0)
    for status in step_statuses:
        counts[COUNTER_OF[StepStatus(status)]] += 1
    return counts


def derive_run_status(step_statuses: Iterable[str]) -> RunStatus:
    """A run's status from its steps' statuses (``run_status`` of their counts)."""
    return run_status(count_steps(step_statuses))
