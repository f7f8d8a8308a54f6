"""The only code that creates or changes runs and materializations (steps).

``runs`` creates, reads and cancels runs; ``steps`` moves steps through their state machine.
"""

from __future__ import annotations

from assets.services.runs import (
    CreatedRun,
    DatabaseDynamicKeyStore,
    RunRequest,
    StepRequest,
    cancel_run,
    create_run,
    get_run,
    get_step,
    is_terminal,
    keys_with_success,
    latest_successful,
    record_rejection,
    refresh_run_status,
    steps_by_key,
    steps_of_run,
    upsert_materialization,
)
from assets.services.steps import (
    StepEnd,
    claim_step,
    complete_step,
    fail_step,
    finish_run_if_done,
    mark_dispatched,
    recover_stale_steps,
    release_for_asset,
    release_ready_steps,
    renew_lease,
    requeue_step,
    resume_step,
    transition_step,
    wait_for_approval,
)

__all__ = [
    "CreatedRun",
    "DatabaseDynamicKeyStore",
    "RunRequest",
    "StepEnd",
    "StepRequest",
    "cancel_run",
    "claim_step",
    "complete_step",
    "create_run",
    "fail_step",
    "finish_run_if_done",
    "get_run",
    "get_step",
    "is_terminal",
    "keys_with_success",
    "latest_successful",
    "mark_dispatched",
    "record_rejection",
    "recover_stale_steps",
    "refresh_run_status",
    "release_for_asset",
    "release_ready_steps",
    "renew_lease",
    "requeue_step",
    "resume_step",
    "steps_by_key",
    "steps_of_run",
    "transition_step",
    "upsert_materialization",
    "wait_for_approval",
]
