"""The engine's settle statement: the status it stores is ``run_status`` of the counters."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.models import Run
from assets.services import engine
from flowstone.status import UNFINISHED_COUNTS, RunKind, StepCount, run_status

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

COUNTS = st.fixed_dictionaries({count: st.integers(0, 3) for count in StepCount})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=COUNTS)
def test_the_settle_statement_stores_the_status_the_rule_table_derives(
    counts: dict[StepCount, int],
) -> None:
    with transaction.atomic():
        run = Run.objects.create(kind=RunKind.MATERIALIZE)
        settled = engine._settle_row(run.pk, Counter(counts))  # the unit under test

        assert settled.status == run_status(counts)
        assert settled.step_counts() == counts
        is_finished = not any(counts[c] for c in UNFINISHED_COUNTS)
        assert (settled.finished_at is not None) == is_finished
        transaction.set_rollback(True)


def test_a_settle_that_finishes_a_run_keeps_its_first_finish_time() -> None:
    run = Run.objects.create(kind=RunKind.MATERIALIZE)
    first = engine._settle_row(run.pk, Counter({StepCount.SUCCEEDED: 1}))
    again = engine._settle_row(run.pk, Counter({StepCount.SUCCEEDED: 1}))
    assert first.finished_at is not None
    assert again.finished_at == first.finished_at


def test_a_guessed_count_never_goes_below_zero() -> None:
    run = Run.objects.create(kind=RunKind.MATERIALIZE)
    guessed = engine._settle_row(
        run.pk, Counter({StepCount.ACTIVE: -1, StepCount.SUCCEEDED: 1}), is_guess=True
    )
    assert guessed.steps_active == 0
