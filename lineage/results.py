"""The answers of lineage queries: frozen dataclasses of strings and ints, with a JSON form.

A ``LineageNode`` is one materialization (id, asset name, encoded partition key) at a depth, in
edges, from the start of a query. ``as_dict()`` returns plain dicts, lists, strings, ints and
booleans, equal to their own JSON round trip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

__all__ = [
    "CODE_VERSION_CHANGED",
    "SUPERSEDED",
    "UPSTREAM_NEWER",
    "ImpactResult",
    "LineageLink",
    "LineageNode",
    "LineageResult",
    "StaleCause",
    "StaleCauseKind",
    "Staleness",
]

StaleCauseKind = Literal["superseded", "upstream_newer", "code_version_changed"]
SUPERSEDED: Final[StaleCauseKind] = "superseded"
"""The materialization asked about is not the latest success of its asset partition."""
UPSTREAM_NEWER: Final[StaleCauseKind] = "upstream_newer"
"""An input it was made from, directly or not, has a newer success."""
CODE_VERSION_CHANGED: Final[StaleCauseKind] = "code_version_changed"
"""It, or an input it was made from, was made with another code version than the asset's now."""


def _json_form(data: dict[str, Any]) -> dict[str, Any]:
    """``asdict`` output with tuples as lists, so it equals its own JSON round trip."""
    return {key: _json_value(item) for key, item in data.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return _json_form(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class LineageNode:
    """One materialization in an answer, ``depth`` edges away from the start."""

    materialization_id: int
    asset: str
    partition_key: str
    depth: int

    @property
    def label(self) -> str:
        """``asset[partition key] #id``, or ``asset #id`` when unpartitioned."""
        key = f"[{self.partition_key}]" if self.partition_key else ""
        return f"{self.asset}{key} #{self.materialization_id}"


@dataclass(frozen=True, kw_only=True, slots=True)
class LineageLink:
    """One lineage edge: ``downstream_id`` was made from ``upstream_id``."""

    downstream_id: int
    upstream_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class LineageResult:
    """The materializations upstream or downstream of ``start``, and the edges followed."""

    direction: Literal["upstream", "downstream"]
    start: LineageNode
    depth_limit: int | None
    nodes: tuple[LineageNode, ...]
    links: tuple[LineageLink, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: plain dicts, lists, strings and ints."""
        return _json_form(asdict(self))


@dataclass(frozen=True, kw_only=True, slots=True)
class ImpactResult:
    """What is stale because ``start`` is newer than what was consumed.

    ``superseded`` are the older successes of the start's asset partition that something was
    made from; ``stale`` are the materializations made from them, directly or not, that are still
    the latest success of their own asset partition.
    """

    start: LineageNode
    depth_limit: int | None
    superseded: tuple[LineageNode, ...]
    stale: tuple[LineageNode, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: plain dicts, lists, strings and ints."""
        return _json_form(asdict(self))


@dataclass(frozen=True, kw_only=True, slots=True)
class StaleCause:
    """One reason a materialization is stale, about ``node`` (depth 0: the one asked about)."""

    kind: StaleCauseKind
    node: LineageNode
    newer_materialization_id: int | None = None
    recorded_code_version: str | None = None
    current_code_version: str | None = None

    def describe(self) -> str:
        """One line for people."""
        if self.kind == SUPERSEDED:
            return f"{self.node.label} is superseded by #{self.newer_materialization_id}"
        if self.kind == UPSTREAM_NEWER:
            return (
                f"input {self.node.label} (depth {self.node.depth}) has a newer materialization "
                f"#{self.newer_materialization_id}"
            )
        return (
            f"{self.node.label} was made with code version {self.recorded_code_version!r}; "
            f"the asset is now at {self.current_code_version!r}"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Staleness:
    """Whether the materialization ``start`` is stale, and every cause found."""

    start: LineageNode
    is_stale: bool
    causes: tuple[StaleCause, ...]

    def summary(self) -> str:
        """``up to date``, or ``stale:`` and the causes, for people."""
        if not self.is_stale:
            return "up to date"
        return "stale: " + "; ".join(cause.describe() for cause in self.causes)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: plain dicts, lists, strings and ints."""
        return _json_form(asdict(self))
