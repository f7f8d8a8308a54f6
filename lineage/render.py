"""Text renderings of lineage answers, for the ``lineage`` management command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from lineage.results import ImpactResult, LineageNode, LineageResult

BRANCH: Final = "├── "
LAST_BRANCH: Final = "└── "
PIPE: Final = "│   "
SPACE: Final = "    "
SEE_ABOVE: Final = " (see above)"


def _order(node: LineageNode) -> tuple[str, str, int]:
    return (node.asset, node.partition_key, node.materialization_id)


def render_tree(result: LineageResult) -> list[str]:
    """The start and, beneath it, what it was made from (or what was made from it) as a tree.

    A materialization reached along several paths is drawn in full once; later it is marked
    ``(see above)``.
    """
    nodes = {node.materialization_id: node for node in (result.start, *result.nodes)}
    children: dict[int, list[LineageNode]] = {}
    for link in result.links:
        parent, child = (
            (link.downstream_id, link.upstream_id)
            if result.direction == "upstream"
            else (link.upstream_id, link.downstream_id)
        )
        children.setdefault(parent, []).append(nodes[child])
    limit = "" if result.depth_limit is None else f", depth <= {result.depth_limit}"
    lines = [f"{result.direction} of {result.start.label}{limit}:", result.start.label]
    if not result.nodes:
        lines.append(f"{LAST_BRANCH}(nothing {result.direction})")
        return lines
    drawn = {result.start.materialization_id}
    stack: list[tuple[LineageNode, str, bool]] = [
        (child, "", index == 0)
        for index, child in enumerate(
            sorted(children.get(result.start.materialization_id, ()), key=_order, reverse=True)
        )
    ]
    while stack:
        node, prefix, is_last = stack.pop()
        kids = sorted(children.get(node.materialization_id, ()), key=_order)
        repeated = node.materialization_id in drawn and bool(kids)
        branch = LAST_BRANCH if is_last else BRANCH
        lines.append(f"{prefix}{branch}{node.label}{SEE_ABOVE if repeated else ''}")
        if repeated or node.materialization_id in drawn:
            continue
        drawn.add(node.materialization_id)
        inner = prefix + (SPACE if is_last else PIPE)
        stack.extend(
            (kid, inner, index == len(kids) - 1) for index, kid in reversed(list(enumerate(kids)))
        )
    return lines


def render_impact(result: ImpactResult) -> list[str]:
    """The start, the older materializations it supersedes, and what is stale because of them."""
    limit = "" if result.depth_limit is None else f", depth <= {result.depth_limit}"
    lines = [f"impact of {result.start.label}{limit}:"]
    if not result.superseded:
        lines.append("  nothing was made from an older materialization of this partition")
        return lines
    older = ", ".join(f"#{node.materialization_id}" for node in result.superseded)
    lines.append(f"  supersedes {older}")
    if not result.stale:
        lines.append("  nothing is stale")
        return lines
    lines.append(f"  stale ({len(result.stale)}):")
    lines.extend(f"    {node.label} (depth {node.depth})" for node in result.stale)
    return lines
