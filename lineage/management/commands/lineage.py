"""``manage.py lineage``: the upstream, downstream or impact of an asset partition."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from django.core.management.base import CommandError, CommandParser

from assets import cli
from flowstone.errors import FlowStoneError
from lineage.errors import MaterializationNotFoundError
from lineage.queries import ImpactResult, downstream, impact, parse_partition, upstream
from lineage.render import render_impact, render_tree

if TYPE_CHECKING:
    from collections.abc import Callable

    from lineage.queries import LineageResult

EXIT_NOT_FOUND: Final = 1
"""The partition has no successful materialization to answer about."""
EXIT_INVALID: Final = cli.EXIT_INVALID
"""The asset, the partition, the depth or another argument is invalid."""

QUERIES: Final[dict[str, Callable[..., LineageResult | ImpactResult]]] = {
    "upstream": upstream,
    "downstream": downstream,
    "impact": impact,
}


class Command(cli.FlowStoneCommand):
    """Show the lineage of an asset partition as a tree, or as JSON."""

    help = (
        "Show what the latest successful materialization of an asset partition was made from "
        "(upstream), what was made from it (downstream), or what is stale because it is newer "
        "(impact). Exit codes: 0 answered, 1 no successful materialization, "
        "2 invalid input (an unknown asset, a bad partition or depth)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Accept the asset, the partition, the direction, a depth limit and ``--json``."""
        parser.add_argument("asset", help="Asset name.")
        partition = parser.add_mutually_exclusive_group()
        partition.add_argument(
            "--partition-key", help="Encoded partition key, e.g. s:eu or d:2025-12-01."
        )
        partition.add_argument(
            "--partition",
            help="Partition as text, read by the asset's partitions definition (e.g. 2025-12-01).",
        )
        parser.add_argument("--direction", choices=sorted(QUERIES), default="upstream")
        parser.add_argument(
            "--depth", type=cli.positive_int, help="Follow at most this many edges."
        )
        parser.add_argument("--json", action="store_true", help="Print the answer as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Parse the partition, run the query and print the tree or the JSON."""
        asset = options["asset"]
        try:
            partition = (
                None
                if options["partition"] is None
                else parse_partition(asset, options["partition"])
            )
            result = QUERIES[options["direction"]](
                asset, partition, options["depth"], partition_key=options["partition_key"]
            )
        except MaterializationNotFoundError as exc:
            raise CommandError(cli.in_cli_terms(str(exc)), returncode=EXIT_NOT_FOUND) from exc
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
            return
        lines = render_impact(result) if isinstance(result, ImpactResult) else render_tree(result)
        self.stdout.write("\n".join(lines))
