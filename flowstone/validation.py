"""Definition validation shared by registry building and Django system checks.

Each rule yields ``DefinitionProblem``s with a permanent id; ``flowstone.checks`` turns them into
``django.core.checks.Error``s and ``Registry`` turns them into one ``DefinitionError``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowstone.graph import find_cycle
from flowstone.io.base import ValidatesOptions
from flowstone.partitions import (
    TimeWindowPartitions,
    check_mapping,
    requires_explicit_mapping,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from flowstone.definitions import AssetDefinition
    from flowstone.scheduling import ScheduleDefinition, SensorDefinition


@dataclass(frozen=True, kw_only=True, slots=True)
class DefinitionProblem:
    """One reason the definitions cannot run, with a stable id (``flowstone.E00N``)."""

    id: str
    message: str
    hint: str
    obj: str

    def __str__(self) -> str:
        return f"{self.id}: {self.message} HINT: {self.hint}"


def check_duplicate_names(definitions: Iterable[AssetDefinition]) -> list[DefinitionProblem]:
    """E001: two different functions claim the same asset name."""
    by_name: dict[str, list[AssetDefinition]] = defaultdict(list)
    for definition in definitions:
        by_name[definition.name].append(definition)
    return [
        DefinitionProblem(
            id="flowstone.E001",
            message=(
                f"asset {name!r} is defined more than once: "
                + ", ".join(f"{d.module}.{d.fn.__qualname__}" for d in found)
            ),
            hint="Give each asset a unique name (the function name or @asset(name=...)).",
            obj=name,
        )
        for name, found in sorted(by_name.items())
        if len(found) > 1
    ]


def check_unknown_dependencies(
    assets: Mapping[str, AssetDefinition],
) -> list[DefinitionProblem]:
    """E002: an asset reads from an asset that is not defined."""
    return [
        DefinitionProblem(
            id="flowstone.E002",
            message=f"asset {name!r} depends on unknown asset {dep!r}",
            hint="Define that asset in a module listed in FLOWSTONE['DEFINITIONS'], "
            "or fix the parameter / deps name.",
            obj=name,
        )
        for name, definition in sorted(assets.items())
        for dep in definition.spec.deps
        if dep not in assets
    ]


def check_cycles(assets: Mapping[str, AssetDefinition]) -> list[DefinitionProblem]:
    """E003: the dependencies form a cycle."""
    cycle = find_cycle({name: d.spec.deps for name, d in assets.items()})
    if cycle is None:
        return []
    return [
        DefinitionProblem(
            id="flowstone.E003",
            message=f"assets form a dependency cycle: {' -> '.join(cycle)}",
            hint="Remove one of these dependencies; assets must form a DAG.",
            obj=cycle[0],
        )
    ]


def check_io_managers(
    assets: Mapping[str, AssetDefinition], io_managers: Collection[str]
) -> list[DefinitionProblem]:
    """E004: an asset names an IO manager that is not configured."""
    return [
        DefinitionProblem(
            id="flowstone.E004",
            message=f"asset {name!r} uses unknown IO manager {d.spec.io_manager!r}",
            hint="Configure it in FLOWSTONE['IO_MANAGERS'] (known: "
            + ", ".join(sorted(io_managers))
            + ").",
            obj=name,
        )
        for name, d in sorted(assets.items())
        if d.spec.io_manager not in io_managers
    ]


def check_io_options(
    assets: Mapping[str, AssetDefinition], io_managers: Mapping[str, object]
) -> list[DefinitionProblem]:
    """E009: an asset's ``io_options`` are invalid for its IO manager (``validate_options``)."""
    problems: list[DefinitionProblem] = []
    for name, definition in sorted(assets.items()):
        manager = io_managers.get(definition.spec.io_manager)
        if not isinstance(manager, ValidatesOptions):
            continue
        problems += [
            DefinitionProblem(
                id="flowstone.E009",
                message=(
                    f"asset {name!r} has invalid io_options for IO manager "
                    f"{definition.spec.io_manager!r}: {reason}"
                ),
                hint="Fix @asset(io_options=...); docs/io-managers.md lists each manager's "
                "options.",
                obj=name,
            )
            for reason in manager.validate_options(definition.spec.io_options)
        ]
    return problems


def check_resources(
    assets: Mapping[str, AssetDefinition], resources: Collection[str]
) -> list[DefinitionProblem]:
    """E005: an asset requires a resource that is not configured."""
    return [
        DefinitionProblem(
            id="flowstone.E005",
            message=f"asset {name!r} requires missing resource {resource!r}",
            hint="Configure it in FLOWSTONE['RESOURCES'] (known: "
            + (", ".join(sorted(resources)) or "none")
            + ").",
            obj=name,
        )
        for name, d in sorted(assets.items())
        for resource in sorted(d.spec.resources)
        if resource not in resources
    ]


def check_partition_mappings(assets: Mapping[str, AssetDefinition]) -> list[DefinitionProblem]:
    """E006: an asset's partitions differ from an upstream's and no usable mapping is declared."""
    problems: list[DefinitionProblem] = []
    for name, definition in sorted(assets.items()):
        spec = definition.spec
        for dep in spec.deps:
            if dep not in assets:
                continue
            upstream = assets[dep].spec.partitions
            mapping = spec.partition_mappings.get(dep)
            if mapping is None:
                if requires_explicit_mapping(spec.partitions, upstream):
                    problems.append(
                        DefinitionProblem(
                            id="flowstone.E006",
                            message=(
                                f"asset {name!r} ({spec.partitions!r}) and its upstream {dep!r} "
                                f"({upstream!r}) are partitioned differently and no mapping "
                                "is declared"
                            ),
                            hint=f"Pass partition_mappings={{{dep!r}: ...}} to @asset, e.g. "
                            "TimeWindowPartitionMapping() or AllPartitionsMapping().",
                            obj=name,
                        )
                    )
                continue
            reason = check_mapping(mapping, spec.partitions, upstream)
            if reason is not None:
                problems.append(
                    DefinitionProblem(
                        id="flowstone.E006",
                        message=f"asset {name!r}: the mapping for {dep!r} cannot apply: {reason}",
                        hint="Choose a mapping that fits both partitions definitions.",
                        obj=name,
                    )
                )
    return problems


def validate_definitions(
    definitions: Iterable[AssetDefinition],
    *,
    io_managers: Collection[str],
    resources: Collection[str],
) -> list[DefinitionProblem]:
    """Run every rule and return all problems (empty when the definitions can run).

    ``io_managers`` may be the names alone; given the managers by name, their
    ``validate_options`` also checks each asset's ``io_options``.
    """
    found = list(definitions)
    problems = check_duplicate_names(found)
    assets = {d.name: d for d in found}
    problems += check_unknown_dependencies(assets)
    problems += check_cycles(assets)
    problems += check_io_managers(assets, io_managers)
    if isinstance(io_managers, Mapping):
        problems += check_io_options(assets, io_managers)
    problems += check_resources(assets, resources)
    problems += check_partition_mappings(assets)
    return problems


def check_duplicate_schedule_names(
    schedules: Iterable[ScheduleDefinition], sensors: Iterable[SensorDefinition]
) -> list[DefinitionProblem]:
    """E010: two schedules or sensors (they share one namespace) claim the same name."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for kind, definitions in (("schedule", schedules), ("sensor", sensors)):
        for definition in definitions:
            by_name[definition.name].append(
                f"{kind} {definition.module}.{getattr(definition.fn, '__qualname__', '?')}"
            )
    return [
        DefinitionProblem(
            id="flowstone.E010",
            message=f"schedule/sensor name {name!r} is defined more than once: " + ", ".join(found),
            hint="Give each schedule and sensor a unique name (the function name or name=...).",
            obj=name,
        )
        for name, found in sorted(by_name.items())
        if len(found) > 1
    ]


def check_schedule_assets(
    schedules: Iterable[ScheduleDefinition],
    sensors: Iterable[SensorDefinition],
    assets: Mapping[str, AssetDefinition],
) -> list[DefinitionProblem]:
    """E011: a schedule selects, or an asset sensor watches, an asset that is not defined."""
    targets = [("schedule", d.name, d.spec.assets) for d in schedules]
    targets += [("sensor", d.name, d.spec.watched_assets) for d in sensors]
    return [
        DefinitionProblem(
            id="flowstone.E011",
            message=f"{kind} {name!r} refers to unknown asset {asset!r}",
            hint="Define that asset in a module listed in FLOWSTONE['DEFINITIONS'], "
            "or fix the name.",
            obj=name,
        )
        for kind, name, names in sorted(targets)
        for asset in names
        if asset not in assets
    ]


def check_schedule_partitions(
    schedules: Iterable[ScheduleDefinition], assets: Mapping[str, AssetDefinition]
) -> list[DefinitionProblem]:
    """E012: a schedule cannot choose a partition: no partition_fn and no time windows."""
    return [
        DefinitionProblem(
            id="flowstone.E012",
            message=(
                f"schedule {definition.name!r} selects asset {asset!r}, whose partitions "
                f"({assets[asset].spec.partitions!r}) are not time windows, and has no "
                "partition_fn"
            ),
            hint="Pass partition_fn=lambda tick_time: ... to @schedule, or select only "
            "time-window or unpartitioned assets.",
            obj=definition.name,
        )
        for definition in sorted(schedules, key=lambda d: d.name)
        if definition.partition_fn is None
        for asset in definition.spec.assets
        if asset in assets
        and assets[asset].spec.partitions is not None
        and not isinstance(assets[asset].spec.partitions, TimeWindowPartitions)
    ]


def validate_schedules(
    schedules: Iterable[ScheduleDefinition],
    sensors: Iterable[SensorDefinition],
    assets: Mapping[str, AssetDefinition],
) -> list[DefinitionProblem]:
    """Run every schedule and sensor rule and return all problems (E010-E012)."""
    found_schedules, found_sensors = list(schedules), list(sensors)
    problems = check_duplicate_schedule_names(found_schedules, found_sensors)
    problems += check_schedule_assets(found_schedules, found_sensors, assets)
    problems += check_schedule_partitions(found_schedules, assets)
    return problems
