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
