"""Drawing the asset graph with Graphviz for the admin."""

from __future__ import annotations

from dataclasses import dataclass, field

import graphviz

from flowstone.registry import get_registry


@dataclass(frozen=True, kw_only=True, slots=True)
class AssetGraphDrawing:
    """The SVG (or, without Graphviz, only the edge list and why there is no picture)."""

    svg: str = ""
    edges: list[tuple[str, str]] = field(default_factory=list)
    problem: str = ""


def render_asset_graph() -> AssetGraphDrawing:
    """Lay out the registry's graph left to right; checkpointed assets are drawn as octagons."""
    registry = get_registry()
    edges = [
        (upstream, name)
        for name in registry.graph.order
        for upstream in registry.graph.upstreams[name]
    ]
    dot = graphviz.Digraph("assets", graph_attr={"rankdir": "LR"}, node_attr={"shape": "box"})
    for name in registry.graph.order:
        definition = registry.get(name)
        shape = "octagon" if definition.checkpoint is not None else "box"
        partitioned = " (partitioned)" if definition.spec.partitions is not None else ""
        dot.node(name, name, shape=shape, tooltip=f"{name}{partitioned}")
    for upstream, name in edges:
        dot.edge(upstream, name)
    try:
        svg = str(dot.pipe(format="svg", encoding="utf-8"))
    except graphviz.ExecutableNotFound:
        return AssetGraphDrawing(
            edges=edges, problem="Graphviz's `dot` is not installed; showing the edges only."
        )
    svg = svg[svg.index("<svg") :] if "<svg" in svg else svg
    return AssetGraphDrawing(svg=svg, edges=edges)
