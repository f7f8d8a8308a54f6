"""Errors of lineage queries and lineage recording.

Both derive from ``flowstone.errors.FlowStoneError``, so the one hierarchy still has one root::

    FlowStoneError
    ├── MaterializationNotFoundError   validation_error   no successful materialization to use
    └── LineageCycleError              validation_error   an edge would close a cycle
"""

from __future__ import annotations

from flowstone.errors import FlowStoneError

__all__ = ["LineageCycleError", "MaterializationNotFoundError"]


class MaterializationNotFoundError(FlowStoneError):
    """The asset partition has no successful materialization (or the id names none)."""

    default_kind = "validation_error"


class LineageCycleError(FlowStoneError):
    """Recording an edge would make a materialization (transitively) consume itself."""

    default_kind = "validation_error"
