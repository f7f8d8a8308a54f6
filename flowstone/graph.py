"""The asset DAG: topological order, upstream/downstream closure and cycle detection."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from flowstone.errors import AssetNotFoundError, DefinitionError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one cycle as ``[a, b, ..., a]`` if the graph ``node -> upstreams`` has one."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    for start in sorted(edges):
        if color[start] != white:
            continue
        path: list[str] = [start]
        stack = [iter(sorted(edges[start]))]
        color[start] = grey
        while stack:
            upstream = next(stack[-1], None)
            if upstream is None:
                color[path.pop()] = black
                stack.pop()
                continue
            if upstream not in color:
                continue
            if color[upstream] == grey:
                return [*path[path.index(upstream) :], upstream]
            if color[upstream] == white:
                color[upstream] = grey
                path.append(upstream)
                stack.append(iter(sorted(edges[upstream])))
    return None


@dataclass(frozen=True, slots=True)
class AssetGraph:
    """An immutable DAG of asset names; ``upstreams[name]`` are the assets ``name`` reads."""

    upstreams: Mapping[str, tuple[str, ...]]
    downstreams: Mapping[str, tuple[str, ...]]
    order: tuple[str, ...]

    @classmethod
    def build(cls, upstreams: Mapping[str, Iterable[str]]) -> AssetGraph:
        """Build the graph; raise ``DefinitionError`` on unknown nodes or a cycle."""
        edges = {name: tuple(sorted(set(deps))) for name, deps in upstreams.items()}
        for name, deps in edges.items():
            unknown = [dep for dep in deps if dep not in edges]
            if unknown:
                raise DefinitionError(f"asset {name!r} depends on unknown asset(s) {unknown}")
        cycle = find_cycle(edges)
        if cycle is not None:
            raise DefinitionError(f"assets form a cycle: {' -> '.join(cycle)}")
        downstreams: dict[str, list[str]] = {name: [] for name in edges}
        for name, deps in edges.items():
            for dep in deps:
                downstreams[dep].append(name)
        return cls(
            upstreams=MappingProxyType(edges),
            downstreams=MappingProxyType({k: tuple(sorted(v)) for k, v in downstreams.items()}),
            order=_topological_order(edges, downstreams),
        )

    def _require(self, names: Iterable[str]) -> list[str]:
        selected = list(names)
        for name in selected:
            if name not in self.upstreams:
                raise AssetNotFoundError(f"unknown asset {name!r}", asset=name)
        return selected

    def upstream_closure(
        self, names: Iterable[str], *, include_self: bool = True
    ) -> frozenset[str]:
        """Return every asset that ``names`` read from, transitively."""
        return self._closure(self._require(names), self.upstreams, include_self=include_self)

    def downstream_closure(
        self, names: Iterable[str], *, include_self: bool = True
    ) -> frozenset[str]:
        """Return every asset that reads from ``names``, transitively."""
        return self._closure(self._require(names), self.downstreams, include_self=include_self)

    @staticmethod
    def _closure(
        start: list[str], edges: Mapping[str, tuple[str, ...]], *, include_self: bool
    ) -> frozenset[str]:
        seen: set[str] = set(start) if include_self else set()
        frontier = list(start)
        while frontier:
            for neighbour in edges[frontier.pop()]:
                if neighbour not in seen:
                    seen.add(neighbour)
                    frontier.append(neighbour)
        return frozenset(seen)

    def sorted(self, names: Iterable[str]) -> list[str]:
        """Return ``names`` in topological order (upstreams first, ties by name)."""
        wanted = set(self._require(names))
        return [name for name in self.order if name in wanted]


def _topological_order(
    edges: Mapping[str, tuple[str, ...]], downstreams: Mapping[str, list[str]]
) -> tuple[str, ...]:
    """Kahn's algorithm with a heap, so the order is deterministic."""
    remaining = {name: len(deps) for name, deps in edges.items()}
    ready = [name for name, count in remaining.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for downstream in downstreams[name]:
            remaining[downstream] -= 1
            if remaining[downstream] == 0:
                heapq.heappush(ready, downstream)
    return tuple(order)
