"""Warnings about unsafe Celery settings, and the settings FlowStone ships with."""

from __future__ import annotations

from typing import Any

from django.core.checks import Warning as CheckWarning

from flowstone.celery import app
from flowstone.celery_checks import check_celery_settings


def _with(**values: Any) -> list[Any]:
    previous = {key: app.conf[key] for key in values}
    app.conf.update(values)
    try:
        return check_celery_settings()
    finally:
        app.conf.update(previous)


def test_shipped_settings_are_safe() -> None:
    assert check_celery_settings() == []
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert app.conf.event_serializer == "json"
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_w001_pickle_accepted() -> None:
    (warning,) = _with(accept_content=["json", "pickle"])
    assert isinstance(warning, CheckWarning)
    assert warning.id == "flowstone.W001"
    assert warning.msg == "Celery accepts or produces unsafe content types: pickle"


def test_w001_pickle_serializer() -> None:
    (warning,) = _with(task_serializer="pickle")
    assert warning.id == "flowstone.W001"


def test_w002_late_ack_without_reject_on_worker_lost() -> None:
    (warning,) = _with(task_reject_on_worker_lost=False)
    assert warning.id == "flowstone.W002"
    assert warning.msg.startswith("late acknowledgement is on but reject-on-worker-lost is off")


def test_w002_early_ack() -> None:
    (warning,) = _with(task_acks_late=False)
    assert warning.id == "flowstone.W002"
    assert warning.msg.startswith("late acknowledgement is off")


def test_w003_visibility_timeout_shorter_than_time_limit() -> None:
    (warning,) = _with(
        broker_url="redis://127.0.0.1:6379/0",
        broker_transport_options={"visibility_timeout": 60},
        task_time_limit=3600,
    )
    assert warning.id == "flowstone.W003"
    assert warning.msg == (
        "the broker's visibility timeout (60 s) is shorter than the task time limit (3600 s): "
        "a long step's message is delivered again while it still runs"
    )


def test_w003_does_not_apply_to_amqp() -> None:
    assert (
        _with(
            broker_url="amqp://guest@127.0.0.1//",
            broker_transport_options={"visibility_timeout": 60},
            task_time_limit=3600,
        )
        == []
    )
