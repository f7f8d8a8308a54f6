"""Django system checks for asset definitions (``manage.py check``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Error, Warning  # noqa: A004  # Django's class

from flowstone.conf import flowstone_settings
from flowstone.errors import DefinitionError
from flowstone.io.base import is_fenced
from flowstone.notifications import channel_problems, settings_problems
from flowstone.registry import find_problems, load_io_managers
from flowstone.step_log import parse_level, parse_max_chars

if TYPE_CHECKING:
    from collections.abc import Sequence

    from django.apps import AppConfig


def check_definitions(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001  # the check protocol
    **kwargs: Any,  # noqa: ARG001  # the check protocol
) -> list[CheckMessage]:
    """Report every problem with the configured asset definitions as an ``Error``."""
    return [
        Error(problem.message, hint=problem.hint, obj=problem.obj, id=problem.id)
        for problem in find_problems()
    ]


def check_step_log(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001  # the check protocol
    **kwargs: Any,  # noqa: ARG001  # the check protocol
) -> list[CheckMessage]:
    """E013: ``STEP_LOG_LEVEL`` and ``STEP_LOG_MAX_CHARS`` as a step's kept log reads them."""
    errors: list[CheckMessage] = []
    for name, parse in (("STEP_LOG_LEVEL", parse_level), ("STEP_LOG_MAX_CHARS", parse_max_chars)):
        try:
            parse(getattr(flowstone_settings, name))
        except DefinitionError as exc:
            errors.append(
                Error(
                    exc.message,
                    hint="Fix it in settings.FLOWSTONE; every step that logs would fail.",
                    obj=f"FLOWSTONE[{name!r}]",
                    id="flowstone.E013",
                )
            )
    return errors


def check_worker_window(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001  # the check protocol
    **kwargs: Any,  # noqa: ARG001  # the check protocol
) -> list[CheckMessage]:
    """W005: ``/health/``'s window must span at least two worker heartbeats, or it flaps."""
    interval = flowstone_settings.WORKER_HEARTBEAT_SECONDS
    window = flowstone_settings.WORKER_SEEN_WITHIN_SECONDS
    if window >= 2 * interval:
        return []
    return [
        Warning(
            f"WORKER_SEEN_WITHIN_SECONDS ({window}) is less than twice WORKER_HEARTBEAT_SECONDS "
            f"({interval}): /health/ reports live workers gone between two heartbeats",
            hint="Make the window at least twice the heartbeat interval (defaults: 60 and 10).",
            obj="FLOWSTONE['WORKER_SEEN_WITHIN_SECONDS']",
            id="flowstone.W005",
        )
    ]


def check_fencing(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001  # the check protocol
    **kwargs: Any,  # noqa: ARG001  # the check protocol
) -> list[CheckMessage]:
    """W004: an IO manager that cannot keep a stale attempt's value from being read.

    A manager is fenced if it stores each attempt's version apart (``DiscardsVersions``) or
    holds the attempt's lease in its write transaction (``HoldsFence``); see ADR 0023.
    """
    managers, _problems = load_io_managers(flowstone_settings.IO_MANAGERS)  # E008 reports these
    return [
        Warning(
            f"IO manager {name!r} ({type(manager).__name__}) is not fenced: a worker that lost "
            "its step's lease (stopped, partitioned) can still replace the recorded value",
            hint="Store each IOTarget.version at its own location and implement discard(), or "
            "write in the steps' database and hold IOTarget.fence (docs/io-managers.md). For "
            "PostgresIOManager: drop 'dsn' and use a Django database alias.",
            obj=f"FLOWSTONE['IO_MANAGERS'][{name!r}]",
            id="flowstone.W004",
        )
        for name, manager in sorted(managers.items())
        if not is_fenced(manager)
    ]


def check_notification_channels(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001  # the check protocol
    **kwargs: Any,  # noqa: ARG001  # the check protocol
) -> list[CheckMessage]:
    """E014: every notification channel must build, and the notification settings be valid."""
    settings: list[CheckMessage] = [
        Error(
            problem.message,
            hint="Fix it in settings.FLOWSTONE (docs/approvals.md, Notifications); until then "
            "the default is used, or no link is sent.",
            obj=f"FLOWSTONE[{problem.name!r}]",
            id="flowstone.E014",
        )
        for problem in settings_problems()
    ]
    return settings + [
        Error(
            problem.message,
            hint="Fix FLOWSTONE['NOTIFICATION_CHANNELS'] (docs/approvals.md, Notifications); "
            "until then its notifications fail and are given up.",
            obj=f"FLOWSTONE['NOTIFICATION_CHANNELS'][{problem.name!r}]",
            id="flowstone.E014",
        )
        for problem in channel_problems()
    ]
