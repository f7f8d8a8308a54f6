"""Django system checks for asset definitions (``manage.py check``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Error, Warning  # noqa: A004  # Django's class

from flowstone.conf import flowstone_settings
from flowstone.io.base import is_fenced
from flowstone.registry import find_problems, load_io_managers

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
