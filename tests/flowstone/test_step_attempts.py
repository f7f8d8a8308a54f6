"""Kept attempts: each failed attempt keeps its error with the traceback, and the records its
asset logged through ``context.log``, bounded; a success keeps a row only if it logged.

In-process runs here, on PostgreSQL and on the embedded SQLite default; the worker cases (a
retry on a real Celery worker, a lease taken back) are in ``tests/assets/test_attempts_workers.py``.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command

import flowstone
from assets.models import Materialization, StepAttempt
from flowstone.status import RunStatus, StepStatus
from flowstone.step_log import RECORD_OVERHEAD, StepLog

if TYPE_CHECKING:
    from django.test import Client
    from pytest_django import Settings

    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _diagnosis(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diagnosis")


@pytest.fixture
def admin_client(client: Client, django_user_model: type[User]) -> Client:
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    return client


def _attempts(run_id: str, asset: str) -> list[StepAttempt]:
    step = Materialization.objects.get(run_id=run_id, asset=asset)
    return list(step.attempt_history.order_by("attempt"))


def test_a_failure_keeps_the_error_traceback_and_what_the_asset_logged() -> None:
    result = flowstone.materialize_all("d_downstream")

    assert result.status == RunStatus.FAILED
    (attempt,) = _attempts(result.run_id, "d_broken")
    assert attempt.outcome == StepAttempt.Outcome.FAILED
    assert attempt.attempt == 1
    assert attempt.worker.startswith("inprocess:")
    assert attempt.started_at is not None
    assert attempt.finished_at is not None
    assert attempt.started_at <= attempt.finished_at
    assert attempt.error is not None
    assert attempt.error["type"] == "ExecutionError"
    assert attempt.error["cause"] == "KeyError: 'missing_key'"
    assert "Traceback (most recent call last)" in attempt.error["traceback"]
    assert "d_broken" in attempt.error["traceback"]  # the asset's own frame is in it
    messages = [(r["level"], r["message"].splitlines()[0]) for r in attempt.log]
    assert messages == [
        ("INFO", "looking up the customer of order 1"),
        ("ERROR", "lookup failed"),
    ]
    assert "KeyError: 'missing_key'" in attempt.log[1]["message"]  # logger.exception's traceback
    # The step keeps the same error; the downstream step never ran, so it has no attempt.
    step = Materialization.objects.get(run_id=result.run_id, asset="d_broken")
    assert step.error == attempt.error
    assert _attempts(result.run_id, "d_downstream") == []


def test_a_retried_attempt_and_the_one_after_it_each_keep_their_own_record() -> None:
    result = flowstone.materialize("d_flaky")

    assert result.status == RunStatus.SUCCESS
    first, second = _attempts(result.run_id, "d_flaky")
    assert (first.attempt, first.outcome) == (1, StepAttempt.Outcome.RETRIED)
    assert first.error is not None
    assert first.error["kind"] == "timeout"
    assert [r["message"] for r in first.log] == ["attempt 1 starts"]
    assert (second.attempt, second.outcome) == (2, StepAttempt.Outcome.SUCCEEDED)
    assert second.error is None
    assert [r["message"] for r in second.log] == ["attempt 2 starts"]


def test_a_success_keeps_its_log_at_the_kept_level_and_a_quiet_one_keeps_no_row() -> None:
    result = flowstone.materialize_all("d_talks")

    assert result.status == RunStatus.SUCCESS
    assert _attempts(result.run_id, "d_quiet") == []
    (attempt,) = _attempts(result.run_id, "d_talks")
    assert attempt.outcome == StepAttempt.Outcome.SUCCEEDED
    assert [(r["level"], r["message"]) for r in attempt.log] == [
        ("INFO", "loaded 42 rows from orders"),
        ("WARNING", "3 rows had no customer\\x00id"),  # NUL escaped: PostgreSQL stores it
        ("INFO", "<script>alert('log')</script>"),
    ]
    assert attempt.log_dropped == 0


def test_the_attempt_that_waits_for_approval_keeps_what_it_logged() -> None:
    result = flowstone.materialize("d_reviewed")

    assert result.status == RunStatus.WAITING_APPROVAL
    (attempt,) = _attempts(result.run_id, "d_reviewed")
    assert (attempt.attempt, attempt.outcome) == (1, StepAttempt.Outcome.PARKED)
    assert [r["message"] for r in attempt.log] == ["summed 12 invoices"]
    assert attempt.error is None


def test_a_long_log_is_cut_at_the_limit_and_says_how_many_records_were_left_out(
    settings: Settings,
) -> None:
    settings.FLOWSTONE = {**settings.FLOWSTONE, "STEP_LOG_MAX_CHARS": 20_000}
    result = flowstone.materialize("d_chatty")

    (attempt,) = _attempts(result.run_id, "d_chatty")
    kept = len(attempt.log)
    record = len("line 00000 ") + 80 + RECORD_OVERHEAD  # each record's share of the bound
    assert kept == 20_000 // record
    assert attempt.log_dropped == 10_000 - kept
    assert attempt.log[0]["message"].startswith("line 00000 ")
    assert attempt.log[-1]["message"].startswith(f"line {kept - 1:05d} ")
    assert result.steps[0].status == StepStatus.SUCCESS


def test_the_kept_level_is_a_setting(settings: Settings) -> None:
    settings.FLOWSTONE = {**settings.FLOWSTONE, "STEP_LOG_LEVEL": "WARNING"}
    result = flowstone.materialize_all("d_talks")

    (attempt,) = _attempts(result.run_id, "d_talks")
    assert [r["level"] for r in attempt.log] == ["WARNING"]


def test_the_step_admin_page_shows_each_attempt_with_traceback_and_log_escaped(
    admin_client: Client,
) -> None:
    failed = flowstone.materialize_all("d_downstream")
    talked = flowstone.materialize_all("d_talks")
    broken = Materialization.objects.get(run_id=failed.run_id, asset="d_broken")
    talks = Materialization.objects.get(run_id=talked.run_id, asset="d_talks")

    run_page = admin_client.get(f"/admin/assets/run/{failed.run_id}/change/").content.decode()
    table = run_page[run_page.index('id="run-steps"') :]
    assert "raised KeyError: &#x27;missing_key&#x27;" in table  # the message, not the traceback
    assert "upstream step d_broken[] did not succeed" in table
    assert "Traceback" not in table
    page = admin_client.get(f"/admin/assets/materialization/{broken.pk}/change/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "ExecutionError [execution_error]" in text
    assert "caused by KeyError: &#x27;missing_key&#x27;" in text
    assert "Traceback (most recent call last)" in text
    assert "looking up the customer of order 1" in text
    text = admin_client.get(f"/admin/assets/materialization/{talks.pk}/change/").content.decode()
    assert "loaded 42 rows from orders" in text
    assert "<script>alert(" not in text
    assert "&lt;script&gt;alert(&#x27;log&#x27;)&lt;/script&gt;" in text


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ("%d rows", (3,), "3 rows"),
        ("%d rows", ("three",), "'%d rows' % ('three',)"),  # a bad format never fails the step
        ({"a": 1}, (), "{'a': 1}"),
        ("x" * 9_000, (), "x" * 8_000 + "... [1000 characters cut]"),
    ],
)
def test_a_record_is_formatted_as_logging_would_and_never_raises(
    msg: object, args: tuple[object, ...], expected: str
) -> None:
    kept = StepLog(max_chars=100_000, level="DEBUG")
    kept.add(20, msg, args)
    assert [r["message"] for r in kept.records] == [expected]


def test_a_staff_user_who_may_view_steps_sees_their_attempts(client: Client) -> None:
    failed = flowstone.materialize_all("d_downstream")
    broken = Materialization.objects.get(run_id=failed.run_id, asset="d_broken")
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_materialization"))
    client.force_login(viewer)

    text = client.get(f"/admin/assets/materialization/{broken.pk}/change/").content.decode()

    assert "attempts with an error or a log" in text.lower()
    assert "looking up the customer of order 1" in text


def test_the_api_shows_a_materialization_with_its_attempts_and_lists_without_them(
    admin_client: Client,
) -> None:
    result = flowstone.materialize("d_flaky")
    step = Materialization.objects.get(run_id=result.run_id, asset="d_flaky")

    detail = admin_client.get(f"/api/materializations/{step.pk}/").json()
    listed = admin_client.get(f"/api/materializations/?run_id={result.run_id}").json()

    assert [(a["attempt"], a["outcome"]) for a in detail["attempts"]] == [
        (2, "succeeded"),
        (1, "retried"),
    ]
    retried = detail["attempts"][1]
    assert retried["error"]["kind"] == "timeout"
    assert "Traceback (most recent call last)" in retried["error"]["traceback"]
    assert retried["log"][0]["message"] == "attempt 1 starts"
    assert retried["worker"].startswith("inprocess:")
    assert "attempts" not in listed["results"][0]


def test_runs_show_prints_each_kept_attempt_with_its_log_and_traceback() -> None:
    failed = flowstone.materialize_all("d_downstream")
    out = io.StringIO()
    call_command("runs", "show", failed.run_id, stdout=out)
    as_json = io.StringIO()
    call_command("runs", "show", failed.run_id, "--json", stdout=as_json)

    text = out.getvalue()
    assert "    attempt 1 failed on inprocess:" in text
    assert "INFO looking up the customer of order 1" in text
    assert "Traceback (most recent call last)" in text
    assert "KeyError: 'missing_key'" in text
    steps = {step["asset"]: step for step in json.loads(as_json.getvalue())["steps"]}
    (attempt,) = steps["d_broken"]["attempts"]
    assert attempt["outcome"] == "failed"
    assert attempt["error"]["cause"] == "KeyError: 'missing_key'"
    assert [r["level"] for r in attempt["log"]] == ["INFO", "ERROR"]
    assert steps["d_quiet"]["attempts"] == []
