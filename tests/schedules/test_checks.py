"""Schedule and sensor checks flowstone.E010-E012, with their exact messages."""

from __future__ import annotations

import pytest
from django.core.checks import Error

from flowstone.checks import check_definitions
from flowstone.errors import DefinitionError
from flowstone.registry import get_registry
from tests.conftest import UseDefinitions


def _errors(use_definitions: UseDefinitions) -> list[Error]:
    use_definitions("tests.pipelines.bad_schedules", resources={})
    return [m for m in check_definitions() if isinstance(m, Error)]


def test_every_rule_reports_with_a_stable_id(use_definitions: UseDefinitions) -> None:
    errors = _errors(use_definitions)
    assert [(e.id, e.obj, e.msg) for e in errors] == [
        (
            "flowstone.E010",
            "twin",
            (
                "schedule/sensor name 'twin' is defined more than once: "
                "schedule tests.pipelines.bad_schedules.twin, "
                "sensor tests.pipelines.bad_schedules.twin_sensor"
            ),
        ),
        ("flowstone.E011", "haunted", "schedule 'haunted' refers to unknown asset 'ghost'"),
        ("flowstone.E011", "watching", "sensor 'watching' refers to unknown asset 'phantom'"),
        (
            "flowstone.E012",
            "twin",
            (
                "schedule 'twin' selects asset 'letters', whose partitions "
                "(StaticPartitions(keys=('a', 'b'))) are not time windows, and has no partition_fn"
            ),
        ),
    ]
    assert errors[0].hint == (
        "Give each schedule and sensor a unique name (the function name or name=...)."
    )
    assert errors[3].hint == (
        "Pass partition_fn=lambda tick_time: ... to @schedule, or select only time-window or "
        "unpartitioned assets."
    )


def test_the_registry_refuses_the_same_definitions(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.bad_schedules", resources={})
    with pytest.raises(DefinitionError) as caught:
        get_registry()
    assert caught.value.details["problems"] == [
        "flowstone.E010",
        "flowstone.E011",
        "flowstone.E011",
        "flowstone.E012",
    ]


def test_valid_schedules_pass(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.scheduled")
    assert check_definitions() == []
