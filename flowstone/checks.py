"""Django system checks for asset definitions (``manage.py check``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Error

from flowstone.registry import find_problems

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
