"""Errors of lineage queries and lineage recording (defined in ``flowstone.errors``)."""

from __future__ import annotations

from flowstone.errors import LineageCycleError, MaterializationNotFoundError

__all__ = ["LineageCycleError", "MaterializationNotFoundError"]
