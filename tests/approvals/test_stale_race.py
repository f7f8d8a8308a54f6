"""A decision and a new upstream value at the same moment, on PostgreSQL: one consistent outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

import flowstone
from approvals import services
from approvals.models import Approval
from flowstone.errors import ApprovalStaleError
from flowstone.status import RunStatus
from lineage.models import AuditEvent
from tests.conftest import UseDefinitions
from tests.pipelines import stale_gates

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 4


@pytest.fixture(autouse=True)
def _stale_gates(
    use_definitions: UseDefinitions, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOWSTONE_DATA_DIR", str(tmp_path))
    use_definitions("tests.pipelines.stale_gates", resources={})


def _together(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in threads released at once; return each one's result or exception."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        start.wait()
        try:
            results[index] = call()
        except Exception as exc:  # noqa: BLE001  # the outcome under test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_an_approval_is_either_decided_before_the_new_value_or_refused_as_stale(
    round_: int,
) -> None:
    gated = flowstone.materialize_all("s_invoice", "eu", requested_by="alice")
    assert gated.status == RunStatus.WAITING_APPROVAL
    approval = Approval.objects.get(run_id=gated.run_id)
    stale_gates.set_rate("eu", 20 + round_)
    decided, rematerialized = _together(
        lambda: services.decide_approval(approval.pk, "approve", actor="bob"),
        lambda: flowstone.materialize("s_rate", "eu"),
    )
    assert isinstance(rematerialized, flowstone.RunResult)
    assert rematerialized.status == RunStatus.SUCCESS
    approval.refresh_from_db()
    stale_events = AuditEvent.objects.filter(
        action="checkpoint.stale", details__approval_id=approval.pk
    ).count()
    if isinstance(decided, ApprovalStaleError):
        assert (approval.status, stale_events) == ("stale", 1)
    else:
        assert isinstance(decided, services.Continuation), decided
        assert (approval.status, stale_events) == ("approved", 0)
