"""Answer types: the pinned names, labels and the JSON form (no database)."""

from __future__ import annotations

import json

from lineage import results
from lineage.results import (
    CODE_VERSION_CHANGED,
    LineageNode,
    StaleCause,
    Staleness,
)


def test_all_is_pinned() -> None:
    assert results.__all__ == [
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


def test_labels_show_the_key_only_when_partitioned() -> None:
    assert LineageNode(materialization_id=3, asset="a", partition_key="", depth=0).label == "a #3"
    node = LineageNode(materialization_id=4, asset="a", partition_key='T:["s:x"]', depth=1)
    assert node.label == 'a[T:["s:x"]] #4'


def test_the_json_form_is_its_own_round_trip() -> None:
    node = LineageNode(materialization_id=4, asset="a", partition_key="s:x", depth=1)
    state = Staleness(
        start=node,
        is_stale=True,
        causes=(
            StaleCause(
                kind=CODE_VERSION_CHANGED,
                node=node,
                recorded_code_version="1",
                current_code_version="2",
            ),
        ),
    )
    data = state.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["causes"] == [
        {
            "kind": "code_version_changed",
            "node": {"materialization_id": 4, "asset": "a", "partition_key": "s:x", "depth": 1},
            "newer_materialization_id": None,
            "recorded_code_version": "1",
            "current_code_version": "2",
        }
    ]
    assert state.summary() == (
        "stale: a[s:x] #4 was made with code version '1'; the asset is now at '2'"
    )
