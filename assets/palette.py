"""The colour of each step status in the admin's pictures: run timeline, partition grid, graph."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from flowstone.status import StepStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

MISSING: Final = "missing"
"""The grid's word for a partition that has never had a step."""

STATUS_COLOURS: Final[Mapping[str, str]] = MappingProxyType(
    {
        StepStatus.PENDING.value: "#c9ced6",
        StepStatus.QUEUED.value: "#9ecae1",
        StepStatus.RUNNING.value: "#3182bd",
        StepStatus.SUCCESS.value: "#31a354",
        StepStatus.FAILED.value: "#de2d26",
        StepStatus.WAITING_APPROVAL.value: "#fd8d3c",
        StepStatus.UPSTREAM_FAILED.value: "#fcae91",
        StepStatus.CANCELED.value: "#969696",
        StepStatus.SKIPPED.value: "#dadaeb",
        MISSING: "#f2f2f2",
    }
)
"""Every ``StepStatus`` and ``MISSING``; the templates make ``status-<name>`` CSS classes of it."""


def colour_of(status: str) -> str:
    """The colour of ``status`` (an unknown word, written behind the services' back: grey)."""
    return STATUS_COLOURS.get(status, STATUS_COLOURS[StepStatus.CANCELED.value])
