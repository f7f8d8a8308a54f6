"""Run status precedence: one rule table, first match wins."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowstone.status import (
    COUNTER_OF,
    StepCount,
    StepStatus,
    count_steps,
    derive_run_status,
    run_status,
)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "success"),
        (["pending"], "pending"),
        (["pending", "pending"], "pending"),
        (["queued"], "running"),
        (["running", "pending"], "running"),
        (["running", "waiting_approval"], "running"),
        (["waiting_approval", "success"], "waiting_approval"),
        (["waiting_approval", "pending"], "waiting_approval"),
        (["pending", "success"], "running"),
        (["pending", "canceled"], "running"),
        (["success", "failed", "canceled"], "failed"),
        (["success", "upstream_failed"], "failed"),
        (["success", "canceled"], "canceled"),
        (["success", "success"], "success"),
        (["skipped"], "success"),
        (["success", "skipped"], "success"),
        (["pending", "skipped"], "running"),
        (["waiting_approval", "skipped"], "waiting_approval"),
        (["skipped", "failed"], "failed"),
        (["skipped", "canceled"], "canceled"),
    ],
)
def test_status_precedence(statuses: list[str], expected: str) -> None:
    assert derive_run_status(statuses) == expected


def test_every_step_status_counts_in_exactly_one_counter() -> None:
    assert set(COUNTER_OF) == set(StepStatus)
    assert set(COUNTER_OF.values()) == set(StepCount)


@given(st.lists(st.sampled_from(list(StepStatus)), max_size=12))
def test_the_status_depends_only_on_which_counters_are_nonzero(statuses: list[StepStatus]) -> None:
    counts = count_steps(statuses)
    assert sum(counts.values()) == len(statuses)
    doubled = {count: 2 * n for count, n in counts.items()}
    assert run_status(doubled) == run_status(counts) == derive_run_status(statuses)
