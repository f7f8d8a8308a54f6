"""The lease heartbeat survives a database error and stops when the lease is lost."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError
from pytest_django import Settings

from assets import services
from flowstone.execution import lease


def test_a_database_error_does_not_stop_the_heartbeat(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.FLOWSTONE = {"STEP_LEASE_SECONDS": 0.06}
    calls: list[str] = []
    third_call = threading.Event()

    def renew(step_id: int, owner: str, attempt: int | None = None) -> bool:
        calls.append(owner)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        if len(calls) >= 3:
            third_call.set()
        return True

    monkeypatch.setattr(services, "renew_lease", renew)
    with lease.lease_heartbeat(1, "w") as lost:
        assert third_call.wait(5)
    assert not lost.is_set()


def test_a_lost_lease_is_reported(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.FLOWSTONE = {"STEP_LEASE_SECONDS": 0.06}
    monkeypatch.setattr(services, "renew_lease", lambda *_: False)
    with lease.lease_heartbeat(1, "w") as lost:
        assert lost.wait(5)


def test_one_thread_renews_every_running_step_each_at_its_own_beat(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.FLOWSTONE = {"STEP_LEASE_SECONDS": 0.09}
    renewed: list[tuple[int, str]] = []
    enough = threading.Event()

    def renew(step_id: int, owner: str, attempt: int | None = None) -> bool:
        renewed.append((step_id, threading.current_thread().name))
        if {s for s, _ in renewed} == {1, 2} and len(renewed) >= 6:
            enough.set()
        return True

    monkeypatch.setattr(services, "renew_lease", renew)
    before = threading.active_count()
    with lease.lease_heartbeat(1, "w") as first, lease.lease_heartbeat(2, "w") as second:
        assert enough.wait(5)
        assert threading.active_count() <= before + 1  # one keeper, not a thread per step
    assert {name for _, name in renewed} == {"flowstone-leases"}
    assert not first.is_set()
    assert not second.is_set()


def test_a_step_that_ended_is_not_reported_lost_and_is_renewed_no_more(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.FLOWSTONE = {"STEP_LEASE_SECONDS": 0.06}
    calls: list[int] = []

    def renew(step_id: int, owner: str, attempt: int | None = None) -> bool:
        calls.append(step_id)
        return True

    monkeypatch.setattr(services, "renew_lease", renew)
    with lease.lease_heartbeat(7, "w") as lost:
        pass
    threading.Event().wait(0.1)  # five beats of the lease that ended
    assert calls == []
    assert not lost.is_set()


def test_a_lease_held_from_the_claim_is_taken_over_by_the_steps_heartbeat(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.FLOWSTONE = {"STEP_LEASE_SECONDS": 0.06}
    calls: list[int] = []
    renewed = threading.Event()

    def renew(step_id: int, owner: str, attempt: int | None = None) -> bool:
        calls.append(step_id)
        renewed.set()
        return True

    monkeypatch.setattr(services, "renew_lease", renew)
    held = lease.hold_lease(9, "w", 1)
    assert renewed.wait(5)  # renewed from the claim on, before the step runs
    with lease.lease_heartbeat(9, "w", 1, held=held) as lost:
        assert lost is held.lost
    after = len(calls)
    threading.Event().wait(0.1)
    assert len(calls) - after <= 1  # at most a renewal already under way; then none
