"""``manage.py lineage``: tree output, JSON output and exit codes."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from typing import TYPE_CHECKING, Any

import pytest
from django.core.management import CommandError, call_command

import flowstone
from lineage.queries import upstream

if TYPE_CHECKING:
    from flowstone.results import RunResult
    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _lineage_graph(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.lineage_graph")


def _run(*args: str) -> str:
    out = StringIO()
    call_command("lineage", *args, stdout=out)
    return out.getvalue()


def _ids(run: RunResult, *assets: str) -> list[int]:
    ids = []
    for asset in assets:
        step_id = run.step(asset, "eu").materialization_id
        assert step_id is not None
        ids.append(step_id)
    return ids


def test_upstream_tree() -> None:
    run = flowstone.materialize_all("sink", "eu")
    sink, left, right, source = _ids(run, "sink", "left", "right", "source")

    assert _run("sink", "--partition-key", "s:eu") == (
        f"upstream of sink[s:eu] #{sink}:\n"
        f"sink[s:eu] #{sink}\n"
        f"├── left[s:eu] #{left}\n"
        f"│   └── source[s:eu] #{source}\n"
        f"└── right[s:eu] #{right}\n"
        f"    └── source[s:eu] #{source}\n"
    )


def test_downstream_tree_with_a_depth_and_a_parsed_partition() -> None:
    run = flowstone.materialize_all("sink", "eu")
    sink, left, right, source = _ids(run, "sink", "left", "right", "source")

    assert _run("source", "--partition", "eu", "--direction", "downstream") == (
        f"downstream of source[s:eu] #{source}:\n"
        f"source[s:eu] #{source}\n"
        f"├── left[s:eu] #{left}\n"
        f"│   └── sink[s:eu] #{sink}\n"
        f"└── right[s:eu] #{right}\n"
        f"    └── sink[s:eu] #{sink}\n"
    )
    assert _run("source", "--partition", "eu", "--direction", "downstream", "--depth", "1") == (
        f"downstream of source[s:eu] #{source}, depth <= 1:\n"
        f"source[s:eu] #{source}\n"
        f"├── left[s:eu] #{left}\n"
        f"└── right[s:eu] #{right}\n"
    )
    assert _run("sink", "--partition", "eu", "--direction", "downstream") == (
        f"downstream of sink[s:eu] #{sink}:\nsink[s:eu] #{sink}\n└── (nothing downstream)\n"
    )


def test_a_shared_subtree_is_drawn_once() -> None:
    flowstone.materialize_all("weekly_summary", dt.date(2025, 12, 1))
    lines = _run("weekly_summary", "--partition", "2025-12-01").splitlines()

    assert lines[0].startswith("upstream of weekly_summary[d:2025-12-01] #")
    assert len(lines) == 2 + 7 + 7
    assert lines[2].startswith("├── daily_events[d:2025-12-01] #")
    assert lines[3].startswith("│   └── catalog #")
    assert lines[-2].startswith("└── daily_events[d:2025-12-07] #")
    assert lines[-1].startswith("    └── catalog #")
    assert not any("(see above)" in line for line in lines)  # a leaf is simply repeated


def test_impact_output() -> None:
    first = flowstone.materialize_all("sink", "eu")
    assert _run("source", "--partition-key", "s:eu", "--direction", "impact").endswith(
        "  nothing was made from an older materialization of this partition\n"
    )
    newer = flowstone.materialize("source", "eu")
    source = newer.step("source", "eu").materialization_id
    sink, left, right, old = _ids(first, "sink", "left", "right", "source")

    assert _run("source", "--partition-key", "s:eu", "--direction", "impact") == (
        f"impact of source[s:eu] #{source}:\n"
        f"  supersedes #{old}\n"
        f"  stale (3):\n"
        f"    left[s:eu] #{left} (depth 1)\n"
        f"    right[s:eu] #{right} (depth 1)\n"
        f"    sink[s:eu] #{sink} (depth 2)\n"
    )


def test_json_output_is_the_query_answer() -> None:
    flowstone.materialize_all("sink", "eu")

    data = json.loads(_run("sink", "--partition-key", "s:eu", "--json", "--depth", "1"))
    assert data == upstream("sink", "eu", 1).as_dict()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("nope",), 2, "unknown asset 'nope'"),
        (("sink", "--partition", "us"), 1, "no successful materialization"),
        (("sink", "--partition", "nowhere"), 2, "nowhere"),
        (("sink", "--partition-key", "eu"), 2, "unknown type tag"),
        (("sink",), 2, "is partitioned"),
        (("catalog", "--partition", "eu"), 2, "not partitioned"),
    ],
)
def test_errors_have_meaningful_exit_codes(args: tuple[str, ...], code: int, message: str) -> None:
    flowstone.materialize_all("sink", "eu")
    with pytest.raises(CommandError, match=message) as caught:
        _run(*args)
    assert caught.value.returncode == code


@pytest.mark.parametrize(
    "args",
    [
        ("sink", "--depth", "0"),
        ("sink", "--depth", "x"),
        ("sink", "--direction", "sideways"),
        ("sink", "--partition", "eu", "--partition-key", "s:eu"),
    ],
)
def test_bad_arguments_are_usage_errors(args: Any) -> None:
    with pytest.raises(CommandError, match="Error: argument"):
        _run(*args)
