"""Recursive SQL over lineage edges that runs unchanged on PostgreSQL and SQLite.

Each walk is one ``WITH RECURSIVE`` query over ``LineageEdge``: the asset names and partition
keys of both ends are copied onto the edge, so a walk reads one table through its indexes (on
``downstream_id`` and ``upstream_id``; ``lineage_edge_up_key`` finds an asset partition's
consumers for impact). Only impact and staleness also read ``Materialization``, through
``materialization_latest``, to tell whether a materialization is still the latest of its key.

Cycle safety: the recursive term is joined with ``UNION`` (not ``UNION ALL``), so repeated rows
are dropped, and every walk stops at a depth limit (``MAX_DEPTH`` when the caller gives none).
Recording refuses edges that would close a cycle, so a cycle can only come from rows written
behind the services' back; a walk over one still ends, and reports each node once at its
shortest depth.

Rows come back unordered: callers sort them in Python, so the two backends' different text
collations never change an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from django.db import connection

from assets.models import Materialization
from flowstone.status import StepStatus
from lineage.models import LineageEdge

if TYPE_CHECKING:
    from collections.abc import Collection

MAX_DEPTH: Final = 1000
"""The deepest walk. Lineage follows the asset DAG, so real paths are far shorter; the limit is
what stops a walk over a (corrupted) cyclic graph when no depth is asked for."""


class Direction(StrEnum):
    """Which way a walk follows the edges."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"


@dataclass(frozen=True, kw_only=True, slots=True)
class WalkRow:
    """``node_id`` was reached from ``via_id`` (one edge) at ``depth`` edges from the start."""

    node_id: int
    via_id: int
    asset: str
    partition_key: str
    depth: int


@dataclass(frozen=True, kw_only=True, slots=True)
class VersionedRow:
    """A walk row with the node's recorded code version and the latest success of its key."""

    row: WalkRow
    code_version: str
    latest_id: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class StaleRow:
    """A materialization reached by an impact walk, at its shortest depth."""

    node_id: int
    asset: str
    partition_key: str
    depth: int


def _sql(template: str, **names: str) -> str:
    """Fill a template's identifiers: quoted table names, ``{latest}`` and column prefixes.

    Only identifiers from this module and the models are interpolated; every value is a query
    parameter.
    """
    quote = connection.ops.quote_name
    mat = quote(Materialization._meta.db_table)  # noqa: SLF001  # Django's documented model API
    edge = quote(LineageEdge._meta.db_table)  # noqa: SLF001
    return template.format(edge=edge, mat=mat, latest=_LATEST_OF_ROW.format(mat=mat), **names)


def _ends(direction: Direction) -> dict[str, str]:
    """The edge column prefixes a walk comes ``src`` from and goes ``dst`` to."""
    if direction is Direction.UPSTREAM:
        return {"src": "downstream", "dst": "upstream"}
    return {"src": "upstream", "dst": "downstream"}


_WALK: Final = """
WITH RECURSIVE walk(node_id, via_id, asset, partition_key, depth) AS (
    SELECT e.{dst}_id, e.{src}_id, e.{dst}_asset, e.{dst}_partition_key, 1
    FROM {edge} e
    WHERE e.{src}_id = %s
  UNION
    SELECT e.{dst}_id, e.{src}_id, e.{dst}_asset, e.{dst}_partition_key, w.depth + 1
    FROM walk w
    JOIN {edge} e ON e.{src}_id = w.node_id
    WHERE w.depth < %s
)
"""

_SELECT_WALK: Final = "SELECT node_id, via_id, asset, partition_key, depth FROM walk"

# The latest successful materialization of a walk row's key, ordered as
# ``assets.services.latest_successful`` orders it (served by the ``materialization_latest`` index).
_LATEST_OF_ROW: Final = """(
    SELECT l.id FROM {mat} l
    WHERE l.asset = w.asset AND l.partition_key = w.partition_key AND l.status = %s
    ORDER BY l.finished_at DESC, l.id DESC
    LIMIT 1
)"""

_SELECT_VERSIONS: Final = """
SELECT w.node_id, w.via_id, w.asset, w.partition_key, w.depth, m.code_version, {latest}
FROM walk w
JOIN {mat} m ON m.id = w.node_id
"""

_IMPACT: Final = """
WITH RECURSIVE walk(node_id, asset, partition_key, depth) AS (
    SELECT e.downstream_id, e.downstream_asset, e.downstream_partition_key, 1
    FROM {mat} x
    JOIN {edge} e
      ON e.upstream_asset = x.asset AND e.upstream_partition_key = x.partition_key
    JOIN {mat} u ON u.id = e.upstream_id
    WHERE x.id = %s AND u.status = %s
      AND (u.finished_at < x.finished_at OR (u.finished_at = x.finished_at AND u.id < x.id))
  UNION
    SELECT e.downstream_id, e.downstream_asset, e.downstream_partition_key, w.depth + 1
    FROM walk w
    JOIN {edge} e ON e.upstream_id = w.node_id
    WHERE w.depth < %s
)
SELECT w.node_id, w.asset, w.partition_key, MIN(w.depth)
FROM walk w
WHERE w.node_id = {latest}
GROUP BY w.node_id, w.asset, w.partition_key
"""


def walk(start_id: int, direction: Direction, *, max_depth: int = MAX_DEPTH) -> list[WalkRow]:
    """Every edge reachable from ``start_id`` in ``direction`` within ``max_depth`` edges."""
    sql = _sql(_WALK + _SELECT_WALK, **_ends(direction))
    with connection.cursor() as cursor:
        cursor.execute(sql, [start_id, max_depth])
        rows = cursor.fetchall()
    return [
        WalkRow(node_id=node, via_id=via, asset=asset, partition_key=key, depth=depth)
        for node, via, asset, key, depth in rows
    ]


def walk_upstream_versions(start_id: int, *, max_depth: int = MAX_DEPTH) -> list[VersionedRow]:
    """The upstream walk from ``start_id``, with each node's code version and latest success."""
    sql = _sql(_WALK + _SELECT_VERSIONS, **_ends(Direction.UPSTREAM))
    with connection.cursor() as cursor:
        cursor.execute(sql, [start_id, max_depth, StepStatus.SUCCESS.value])
        rows = cursor.fetchall()
    return [
        VersionedRow(
            row=WalkRow(node_id=node, via_id=via, asset=asset, partition_key=key, depth=depth),
            code_version=code_version,
            latest_id=latest,
        )
        for node, via, asset, key, depth, code_version, latest in rows
    ]


def walk_stale(newer_id: int, *, max_depth: int = MAX_DEPTH) -> list[StaleRow]:
    """Latest materializations that consumed, within ``max_depth`` edges, an older success.

    "Older" means a successful materialization of the same asset partition as ``newer_id`` that
    finished before it (ties broken by id). Only materializations that are still the latest
    success of their own asset partition are returned.
    """
    sql = _sql(_IMPACT)
    success = StepStatus.SUCCESS.value
    with connection.cursor() as cursor:
        cursor.execute(sql, [newer_id, success, max_depth, success])
        rows = cursor.fetchall()
    return [
        StaleRow(node_id=node, asset=asset, partition_key=key, depth=depth)
        for node, asset, key, depth in rows
    ]


def reached(start_id: int, targets: Collection[int], direction: Direction) -> set[int]:
    """Which of ``targets`` can be reached from ``start_id`` in ``direction``."""
    if not targets:
        return set()
    source_column = f"{_ends(direction)['src']}_id"
    if not LineageEdge.objects.filter(**{source_column: start_id}).exists():
        return set()  # the usual case when recording: nothing consumed the new materialization
    return {row.node_id for row in walk(start_id, direction)} & set(targets)
