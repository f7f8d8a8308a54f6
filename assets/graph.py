"""Drawing the asset graph with Graphviz for the admin: each asset's status and staleness.

An asset's status is the status of its latest step (any partition; the order of
``assets.partition_health``); its staleness is ``lineage.queries.staleness`` of its latest
success. Each node links to the asset's admin page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import graphviz
from django.urls import reverse

from assets.models import Materialization
from assets.palette import MISSING, colour_of
from assets.partition_health import newest_first
from flowstone.errors import FlowStoneError
from flowstone.registry import get_registry
from flowstone.status import StepStatus
from lineage import queries as lineage_queries

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

STALE_BORDER = "#b30000"


@dataclass(frozen=True, kw_only=True, slots=True)
class AssetState:
    """What the graph shows of one asset."""

    name: str
    status: str
    """The latest step's status, or ``MISSING`` if the asset never had a step."""
    is_stale: bool = False
    staleness: str = ""
    """Why the latest success is stale (or that it is not); empty without a success."""
    is_partitioned: bool = False

    @property
    def url(self) -> str:
        """The asset's admin page."""
        return reverse("admin:assets_asset_detail", args=[self.name])


@dataclass(frozen=True, kw_only=True, slots=True)
class AssetGraphDrawing:
    """The SVG (or, without Graphviz, only the edge list and why there is no picture)."""

    svg: str = ""
    edges: list[tuple[str, str]] = field(default_factory=list)
    states: list[AssetState] = field(default_factory=list)
    problem: str = ""


def asset_states(names: Sequence[str] | None = None) -> dict[str, AssetState]:
    """The status and staleness of registered assets (per asset: two queries, a few for staleness).

    ``names`` (registered asset names; default: all, in DAG order) limits which.
    """
    registry = get_registry()
    states = {}
    for name in registry.graph.order if names is None else names:
        steps = Materialization.objects.filter(asset=name)
        status = steps.order_by(*newest_first()).values_list("status", flat=True).first()
        success_id = (
            steps.filter(status=StepStatus.SUCCESS)
            .order_by("-finished_at", "-id")
            .values_list("id", flat=True)
            .first()
        )
        is_stale, summary = False, ""
        if success_id is not None:
            try:
                answer = lineage_queries.staleness(name, materialization_id=success_id)
            except FlowStoneError as exc:
                summary = str(exc)
            else:
                is_stale, summary = answer.is_stale, answer.summary()
        states[name] = AssetState(
            name=name,
            status=status or MISSING,
            is_stale=is_stale,
            staleness=summary,
            is_partitioned=registry.get(name).spec.partitions is not None,
        )
    return states


def render_asset_graph() -> AssetGraphDrawing:
    """Lay out the registry's graph left to right; checkpointed assets are drawn as octagons.

    A node is filled with its status's colour, has a thick red dashed border when stale, and
    links to the asset's page.
    """
    registry = get_registry()
    states = asset_states()
    edges = [
        (upstream, name)
        for name in registry.graph.order
        for upstream in registry.graph.upstreams[name]
    ]
    dot = graphviz.Digraph("assets", graph_attr={"rankdir": "LR"}, node_attr={"shape": "box"})
    for name in registry.graph.order:
        definition = registry.get(name)
        dot.node(
            name,
            **_node_attributes(states[name], is_checkpointed=definition.checkpoint is not None),
        )
    for upstream, name in edges:
        dot.edge(upstream, name)
    ordered = [states[name] for name in registry.graph.order]
    try:
        svg = str(dot.pipe(format="svg", encoding="utf-8"))
    except graphviz.ExecutableNotFound:
        return AssetGraphDrawing(
            edges=edges,
            states=ordered,
            problem="Graphviz's `dot` is not installed; showing the edges only.",
        )
    svg = svg[svg.index("<svg") :] if "<svg" in svg else svg
    return AssetGraphDrawing(svg=svg, edges=edges, states=ordered)


def _node_attributes(state: AssetState, *, is_checkpointed: bool) -> Mapping[str, str]:
    """Graphviz attributes of one node (the graphviz package quotes every value)."""
    stale = " · stale" if state.is_stale else ""
    partitioned = " (partitioned)" if state.is_partitioned else ""
    attributes = {
        "label": f"{state.name}\\n{state.status}{stale}",
        "shape": "octagon" if is_checkpointed else "box",
        "style": "filled,dashed" if state.is_stale else "filled",
        "fillcolor": colour_of(state.status),
        "URL": state.url,
        "tooltip": graphviz.escape(f"{state.name}{partitioned}: {state.status}. {state.staleness}"),
    }
    if state.is_stale:
        attributes |= {"color": STALE_BORDER, "penwidth": "3"}
    return attributes
