"""Approvals bound to the data they reviewed, bulk decisions, one reason limit (in-process)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import flowstone
from approvals import services
from approvals.models import Approval
from assets.models import Materialization
from assets.services import success_recorded
from flowstone.errors import (
    ApprovalDecidedError,
    ApprovalNotFoundError,
    ApprovalStaleError,
    ValidationFailedError,
)
from flowstone.execution.resume import continue_after_decision
from flowstone.partitions import encode_partition_key
from flowstone.status import RunStatus
from lineage.models import AuditEvent
from schedules.services.feed import DatabaseRunStatusFeed
from tests.conftest import UseDefinitions
from tests.pipelines import stale_gates

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _stale_gates(
    use_definitions: UseDefinitions, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOWSTONE_DATA_DIR", str(tmp_path))
    use_definitions("tests.pipelines.stale_gates", "tests.pipelines.gates", resources={})


def _waiting_price(region: str = "eu") -> tuple[str, Approval]:
    result = flowstone.materialize_all("s_invoice", region, requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    return result.run_id, Approval.objects.get(run_id=result.run_id)


def _new_rate(region: str, rate: int) -> None:
    stale_gates.set_rate(region, rate)
    assert flowstone.materialize("s_rate", region).status == RunStatus.SUCCESS


def test_the_approval_records_the_inputs_it_reviewed_at_their_versions() -> None:
    _, approval = _waiting_price()
    upstream = Materialization.objects.get(asset="s_rate", status="success")
    (bound,) = approval.inputs.all()
    assert (bound.asset, bound.partition_key, bound.materialization_id) == (
        "s_rate",
        "s:eu",
        upstream.pk,
    )
    assert bound.version == upstream.metadata["version"]
    assert approval.inputs_read_at is not None


def test_a_new_upstream_value_makes_the_pending_approval_stale_and_unapprovable() -> None:
    _, approval = _waiting_price()
    _new_rate("eu", 12)
    approval.refresh_from_db()
    assert approval.status == "stale"
    assert approval.stale_at is not None
    (event,) = AuditEvent.objects.filter(action="checkpoint.stale")
    assert event.details["approval_id"] == approval.pk
    assert event.details["rematerialized"] == {"asset": "s_rate", "partition_key": "s:eu"}
    for decision, extra in (("approve", {}), ("modify", {"value": {"rate": 1, "price": 3}})):
        with pytest.raises(ApprovalStaleError, match="is stale"):
            services.decide_approval(approval.pk, decision, actor="bob", **extra)  # type: ignore[arg-type]
    approval.refresh_from_db()
    assert approval.status == "stale"
    assert not AuditEvent.objects.filter(action__in=("checkpoint.approved", "checkpoint.modified"))


def test_other_partitions_and_other_assets_leave_it_pending() -> None:
    _, approval = _waiting_price("eu")
    _new_rate("us", 99)
    flowstone.materialize_all("g_invoice", "small")
    approval.refresh_from_db()
    assert approval.status == "pending"
    assert not AuditEvent.objects.filter(action="checkpoint.stale").exists()


def test_rereview_computes_from_the_new_value_and_its_approval_sends_it_downstream() -> None:
    run_id, stale = _waiting_price()
    _new_rate("eu", 12)
    continue_after_decision(services.rereview_approval(stale.pk, actor="bob", actor_type="user"))
    stale.refresh_from_db()
    assert (stale.status, stale.rereviewed_by) == ("stale", "bob")
    fresh = Approval.objects.get(run_id=run_id, status="pending")
    assert fresh.materialization_id == stale.materialization_id
    assert fresh.proposed_value == {"rate": 12, "price": 36}
    assert (
        fresh.inputs.get().version
        == (
            Materialization.objects.filter(asset="s_rate", status="success")
            .latest("finished_at")
            .metadata["version"]
        )
    )
    with pytest.raises(ApprovalDecidedError, match="already reviewed again"):
        services.rereview_approval(stale.pk, actor="bob", actor_type="user")
    with pytest.raises(ApprovalDecidedError):
        services.decide_approval(stale.pk, "reject", actor="bob", reason="late")
    continue_after_decision(services.decide_approval(fresh.pk, "approve", actor="bob"))
    assert flowstone.RunHandle(run_id).result().status == RunStatus.SUCCESS
    assert stale_gates.booked() == [{"region": "eu", "rate": 12, "price": 36}]
    assert AuditEvent.objects.filter(action="checkpoint.rereviewed", actor="bob").count() == 1


def test_only_a_stale_approval_is_reviewed_again() -> None:
    _, approval = _waiting_price()
    with pytest.raises(ApprovalDecidedError, match="only a stale approval"):
        services.rereview_approval(approval.pk, actor="bob", actor_type="user")
    assert not AuditEvent.objects.filter(action="checkpoint.rereviewed").exists()


def test_a_stale_approval_may_still_be_rejected() -> None:
    run_id, approval = _waiting_price()
    _new_rate("eu", 12)
    continue_after_decision(
        services.decide_approval(approval.pk, "reject", actor="bob", reason="numbers moved")
    )
    assert flowstone.RunHandle(run_id).result().status == RunStatus.FAILED
    assert Approval.objects.get(pk=approval.pk).status == "rejected"
    assert AuditEvent.objects.get(action="checkpoint.rejected").details["was"] == "stale"


def test_a_decision_checks_the_inputs_again_when_the_success_missed_it() -> None:
    """A success that committed while the approval was being requested did not see it."""
    _, approval = _waiting_price()
    uid = "approvals.stale_on_new_value"
    assert success_recorded.disconnect(dispatch_uid=uid)
    try:
        _new_rate("eu", 12)
    finally:
        success_recorded.connect(services.mark_readers_stale, dispatch_uid=uid)
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    with pytest.raises(ApprovalStaleError):
        services.decide_approval(approval.pk, "approve", actor="bob")
    assert Approval.objects.get(pk=approval.pk).status == "stale"  # the refusal is kept
    assert AuditEvent.objects.filter(action="checkpoint.stale").count() == 1


def test_a_timeout_does_not_auto_approve_a_stale_value() -> None:
    flowstone.materialize_all("g_timeout_approve", "large", requested_by="alice")
    approval = Approval.objects.get(asset="g_timeout_approve")
    uid = "approvals.stale_on_new_value"
    success_recorded.disconnect(dispatch_uid=uid)
    try:
        flowstone.materialize("g_invoice", "large")
    finally:
        success_recorded.connect(services.mark_readers_stale, dispatch_uid=uid)
    assert services.expire_overdue(now=timezone.now() + dt.timedelta(hours=2)) == []
    assert Approval.objects.get(pk=approval.pk).status == "stale"


def test_canceling_the_run_cancels_a_stale_approval() -> None:
    run_id, approval = _waiting_price()
    _new_rate("eu", 12)
    flowstone.RunHandle(run_id).cancel(actor="carol")
    assert Approval.objects.get(pk=approval.pk).status == "canceled"


def test_an_extension_is_audited_once() -> None:
    flowstone.materialize_all("g_timeout_extend", "large", requested_by="alice")
    for _ in range(2):
        services.expire_overdue(now=timezone.now() + dt.timedelta(hours=1.5))
    (event,) = AuditEvent.objects.filter(action="checkpoint.extended")
    assert (event.actor_type, event.actor, event.asset) == ("system", "timeout", "g_timeout_extend")
    assert event.details == {"approval_id": Approval.objects.get().pk, "policy": "extend"}


def _daily_approvals(days: int) -> list[Approval]:
    first = dt.date(2025, 1, 1)
    result = flowstone.backfill(
        "s_daily", [first + dt.timedelta(days=n) for n in range(days)], requested_by="alice"
    )
    assert result.status == RunStatus.WAITING_APPROVAL
    return list(Approval.objects.filter(asset="s_daily").order_by("partition_key"))


def test_bulk_decision_reports_each_refusal_and_decides_the_rest() -> None:
    first, second, stale, own, pending = _daily_approvals(5)
    services.decide_approval(first.pk, "reject", actor="carol", reason="no")
    Approval.objects.filter(pk=stale.pk).update(status="stale")
    Approval.objects.filter(pk=own.pk).update(requested_by="bob")
    outcomes = services.decide_many(
        [first.pk, second.pk, stale.pk, own.pk, 999_999, pending.pk, second.pk],
        "approve",
        actor="bob",
    )
    by_id = {o.approval_id: (o.status, o.refused) for o in outcomes}
    assert by_id == {
        first.pk: ("", "already_decided"),
        second.pk: ("approved", ""),
        stale.pk: ("", "stale"),
        own.pk: ("", "forbidden"),
        999_999: ("", "not_found"),
        pending.pk: ("approved", ""),
    }
    assert [o.approval_id for o in outcomes][-1] == pending.pk  # order kept, duplicates once
    approved = AuditEvent.objects.filter(action="checkpoint.approved")
    assert sorted(e.details["approval_id"] for e in approved) == sorted([second.pk, pending.pk])
    again = services.decide_many([second.pk], "reject", actor="bob", reason="too late")
    assert again[0].refused == "already_decided"


def test_bulk_reject_with_one_reason_fails_the_steps() -> None:
    approvals = _daily_approvals(3)
    outcomes = services.decide_many(
        [a.pk for a in approvals], "reject", actor="bob", reason="wrong month"
    )
    for outcome in outcomes:
        assert outcome.continuation is not None
        continue_after_decision(outcome.continuation)
    assert {a.status for a in Approval.objects.all()} == {"rejected"}
    assert AuditEvent.objects.filter(action="checkpoint.rejected").count() == 3
    assert flowstone.RunHandle(str(approvals[0].run_id)).result().status == RunStatus.FAILED


@pytest.mark.parametrize(
    ("decision", "reason", "message"),
    [
        ("modify", "x", "decision must be one of"),
        ("reject", "  ", "a rejection needs a reason"),
        ("approve", "y" * 2001, "2001 characters long; at most 2000"),
    ],
)
def test_bulk_bad_input_records_nothing(decision: str, reason: str, message: str) -> None:
    approvals = _daily_approvals(2)
    with pytest.raises(ValidationFailedError, match=message):
        services.decide_many([a.pk for a in approvals], decision, actor="bob", reason=reason)
    assert {a.status for a in Approval.objects.all()} == {"pending"}
    assert not AuditEvent.objects.filter(action__startswith="checkpoint.").exists()


def test_more_than_the_bulk_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "MAX_BULK", 2)
    approvals = _daily_approvals(3)
    with pytest.raises(ValidationFailedError, match="at most 2 approvals"):
        services.decide_many([a.pk for a in approvals], "approve", actor="bob")
    with pytest.raises(ValidationFailedError, match="narrow the partitions"):
        services.pending_of("s_daily")
    keys = [encode_partition_key(dt.date(2025, 1, day)) for day in (1, 3)]
    assert len(services.pending_of("s_daily", keys)) == 2


@pytest.mark.parametrize(
    ("reason", "kept"),
    [
        ("r" * 2000, "r" * 2000),
        ("  " + "r" * 2000 + "\n", "r" * 2000),  # surrounding blanks are not counted
        ("r" * 2001, None),
        ("r" * 100_000, None),
        ("bad\x00reason", None),
    ],
)
def test_one_reason_limit_refused_never_cut(reason: str, kept: str | None) -> None:
    _, approval = _waiting_price()
    if kept is None:
        with pytest.raises(ValidationFailedError):
            services.decide_approval(approval.pk, "reject", actor="bob", reason=reason)
        assert Approval.objects.get(pk=approval.pk).status == "pending"
        assert not AuditEvent.objects.filter(action="checkpoint.rejected").exists()
    else:
        services.decide_approval(approval.pk, "reject", actor="bob", reason=reason)
        assert Approval.objects.get(pk=approval.pk).reason == kept


@pytest.mark.parametrize("too_large", [2**63, 10**30])
def test_an_id_beyond_any_key_is_refused_before_any_query(too_large: int) -> None:
    with pytest.raises(ValidationFailedError, match="no approval has the id"):
        services.decide_many([too_large], "approve", actor="bob")
    with pytest.raises(ApprovalNotFoundError):
        services.get_approval(too_large)


def _waiting_feed() -> list[int | None]:
    events = DatabaseRunStatusFeed().events_after(
        "approval_waiting",
        after=None,
        until=timezone.now() + dt.timedelta(days=1),
        assets=[],
        limit=10,
    )
    return [event.approval_id for event in events]


def test_a_stale_approval_still_waits_for_a_person_in_the_run_status_feed() -> None:
    _, approval = _waiting_price()
    assert _waiting_feed() == [approval.pk]
    _new_rate("eu", 12)
    assert Approval.objects.get(pk=approval.pk).status == "stale"
    assert _waiting_feed() == [approval.pk]
    continue_after_decision(services.rereview_approval(approval.pk, actor="bob", actor_type="user"))
    fresh = Approval.objects.get(status="pending")
    assert _waiting_feed() == [fresh.pk]  # the re-reviewed one waits no more
    services.decide_approval(fresh.pk, "reject", actor="bob", reason="no")
    assert _waiting_feed() == []


@pytest.mark.postgres
def test_a_cancel_locks_the_approvals_in_id_order_before_updating_them() -> None:
    run_id, approval = _waiting_price()
    with CaptureQueriesContext(connection) as queries:
        flowstone.RunHandle(run_id).cancel(actor="carol")
    on_approvals = [q["sql"] for q in queries if '"approvals_approval"' in q["sql"]]
    locked = next(i for i, sql in enumerate(on_approvals) if "FOR UPDATE" in sql)
    updated = next(i for i, sql in enumerate(on_approvals) if sql.startswith("UPDATE"))
    assert locked < updated
    assert re.search(
        r'ORDER BY (1|"approvals_approval"\."id") ASC FOR UPDATE', on_approvals[locked]
    )
    assert Approval.objects.get(pk=approval.pk).status == "canceled"
