"""System checks that warn about Celery settings that can lose, double or endanger work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Warning  # noqa: A004  # Django's check class

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from django.apps import AppConfig

CHECKED_SETTINGS = (
    "accept_content",
    "result_accept_content",
    "task_serializer",
    "result_serializer",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "broker_url",
    "broker_transport_options",
    "task_time_limit",
)
UNSAFE_CONTENT = frozenset(
    {"pickle", "application/x-python-serialize", "yaml", "application/x-yaml"}
)


def _check_accept_content(conf: Mapping[str, Any]) -> list[CheckMessage]:
    accepted = set(conf.get("accept_content") or ()) | set(conf.get("result_accept_content") or ())
    unsafe = sorted(accepted & UNSAFE_CONTENT)
    serializers = {conf.get("task_serializer"), conf.get("result_serializer")}
    unsafe += sorted(s for s in serializers & UNSAFE_CONTENT if s not in unsafe)
    if not unsafe:
        return []
    return [
        Warning(
            f"Celery accepts or produces unsafe content types: {', '.join(unsafe)}",
            hint="Set CELERY_ACCEPT_CONTENT = ['json'] and JSON serializers; FlowStone payloads "
            "are JSON only and unpickling a message runs code.",
            obj="CELERY_ACCEPT_CONTENT",
            id="flowstone.W001",
        )
    ]


def _check_late_ack(conf: Mapping[str, Any]) -> list[CheckMessage]:
    if conf.get("task_acks_late") and not conf.get("task_reject_on_worker_lost"):
        return [
            Warning(
                "late acknowledgement is on but reject-on-worker-lost is off: a message whose "
                "worker process is killed is acknowledged and its step is only recovered when its "
                "lease expires",
                hint="Set CELERY_TASK_REJECT_ON_WORKER_LOST = True.",
                obj="CELERY_TASK_REJECT_ON_WORKER_LOST",
                id="flowstone.W002",
            )
        ]
    if not conf.get("task_acks_late"):
        return [
            Warning(
                "late acknowledgement is off: a message is acknowledged before its step runs, so "
                "a worker that dies mid-step loses the message",
                hint="Set CELERY_TASK_ACKS_LATE = True and "
                "CELERY_TASK_REJECT_ON_WORKER_LOST = True.",
                obj="CELERY_TASK_ACKS_LATE",
                id="flowstone.W002",
            )
        ]
    return []


def _check_visibility_timeout(conf: Mapping[str, Any]) -> list[CheckMessage]:
    broker = str(conf.get("broker_url") or "")
    if not broker.startswith(("redis://", "rediss://", "sqs://")):
        return []
    options = conf.get("broker_transport_options") or {}
    visibility = float(options.get("visibility_timeout", 3600))
    time_limit = conf.get("task_time_limit")
    if time_limit is None or visibility >= float(time_limit):
        return []
    return [
        Warning(
            f"the broker's visibility timeout ({visibility:g} s) is shorter than the task time "
            f"limit ({float(time_limit):g} s): a long step's message is delivered again while it "
            "still runs",
            hint="Raise CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] above "
            "CELERY_TASK_TIME_LIMIT.",
            obj="CELERY_BROKER_TRANSPORT_OPTIONS",
            id="flowstone.W003",
        )
    ]


def check_celery_settings(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001  # the check protocol
    **kwargs: Any,  # noqa: ARG001  # the check protocol
) -> list[CheckMessage]:
    """Warn about unsafe Celery settings (W001 content types, W002 acks, W003 visibility)."""
    from flowstone.celery import app  # noqa: PLC0415  # configured from settings on first use

    conf = {key: app.conf.get(key) for key in CHECKED_SETTINGS}
    return [
        *_check_accept_content(conf),
        *_check_late_ack(conf),
        *_check_visibility_timeout(conf),
    ]
