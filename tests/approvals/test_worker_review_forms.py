"""Typed forms and options on a real Celery worker: the decided run continues (or skips) there."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from pytest_django import Settings
from rest_framework.test import APIClient

import flowstone
from approvals.models import Approval
from assets.models import Materialization, Run
from flowstone.execution.handle import RunHandle
from flowstone.status import RunStatus, StepStatus
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 90


def _events(stack: Services, name: str) -> list[dict[str, object]]:
    path = stack.data_dir / "review_forms.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == name]


def _wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _waiting(handle: RunHandle) -> Approval:
    _wait_for(lambda: Approval.objects.filter(run_id=handle.run_id).exists())
    return Approval.objects.get(run_id=handle.run_id)


def _steps(handle: RunHandle) -> dict[str, str]:
    rows = Materialization.objects.filter(run_id=handle.run_id)
    return dict(rows.values_list("asset", "status"))


def test_typed_form_and_options_on_a_worker(settings: Settings, tmp_path: Path) -> None:
    """Modify, skip and fail, each on its own run, one after the other.

    The runs share ``rf_invoice`` (unpartitioned): a run started while another's approval is
    pending would write a new invoice and make that approval stale (ADR 0029), so each run is
    decided and ended before the next one starts.
    """
    reviewer = User.objects.create_user("bob", is_staff=True)
    for codename in ("decide_approval", "view_approval"):
        reviewer.user_permissions.add(Permission.objects.get(codename=codename))
    api = APIClient()
    api.force_authenticate(reviewer)

    def decide(handle: RunHandle, body: dict[str, object]) -> int:
        approval = _waiting(handle)
        return api.post(f"/api/approvals/{approval.pk}/decide/", body, format="json").status_code

    with worker_stack(settings, tmp_path, "tests.pipelines.review_forms") as stack:
        stack.start_worker("w1", concurrency=2)

        # The typed form round trip: an invalid field is refused, a valid value flows on.
        modified = flowstone.materialize_all_async("rf_report", requested_by="alice")
        approval = _waiting(modified)
        url = f"/api/approvals/{approval.pk}/decide/"
        refused = api.post(url, {"decision": "modify", "value": {"amount": -1}}, format="json")
        assert refused.status_code == 400
        assert refused.json() == {"value": {"/amount": ["-1 is less than the minimum of 0"]}}
        approval.refresh_from_db()
        assert approval.status == Approval.Status.PENDING
        value = {"amount": 42, "currency": "USD"}
        assert decide(modified, {"decision": "modify", "value": value}) == 200
        assert modified.wait(WAIT).status == RunStatus.SUCCESS
        ledgers = [e for e in _events(stack, "rf_ledger") if e["run_id"] == str(modified.run_id)]
        assert [e["value"] for e in ledgers] == [value]

        # Skip: the checkpoint and its downstream are skipped, the sibling branch runs.
        held = flowstone.materialize_all_async("rf_report", requested_by="alice")
        assert decide(held, {"decision": "option", "option": "hold"}) == 200
        assert held.wait(WAIT).status == RunStatus.SUCCESS
        _wait_for(lambda: _steps(held)["rf_archive"] == StepStatus.SUCCESS)
        assert _steps(held) == {
            "rf_invoice": StepStatus.SUCCESS,
            "rf_archive": StepStatus.SUCCESS,
            "rf_payment": StepStatus.SKIPPED,
            "rf_ledger": StepStatus.SKIPPED,
            "rf_report": StepStatus.SKIPPED,
        }
        run = Run.objects.get(pk=held.run_id)
        assert (run.steps_skipped, run.steps_succeeded, run.steps_remaining) == (3, 2, 0)
        assert not [e for e in _events(stack, "rf_ledger") if e["run_id"] == str(held.run_id)]

        # Fail: the step fails as a rejection does.
        blocked = flowstone.materialize_all_async("rf_report", requested_by="alice")
        assert decide(blocked, {"decision": "option", "option": "block"}) == 200
        assert blocked.wait(WAIT).status == RunStatus.FAILED
        steps = _steps(blocked)
        assert steps["rf_payment"] == StepStatus.FAILED
        assert steps["rf_ledger"] == StepStatus.UPSTREAM_FAILED
        assert steps["rf_archive"] == StepStatus.SUCCESS
