"""Definition validation shared by registry building and Django system checks.

Each rule yields ``DefinitionProblem``s with a permanent id; ``flowstone.checks`` turns them into
``django.core.checks.Error``s and ``Registry`` turns them into one ``DefinitionError``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowstone.graph import find_cycle
from flowstone.partitions import check_mapping, requires_explicit_mapping

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

    from flowstone.definitions import AssetDefinition


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
    """Run every rule and return all problems (empty when the definitions can run)."""
    found = list(definitions)
    problems = check_duplicate_names(found)
    assets = {d.name: d for d in found}
    problems += check_unknown_dependencies(assets)
    problems += check_cycles(assets)
    problems += check_io_managers(assets, io_managers)
    problems += check_resources(assets, resources)
    problems += check_partition_mappings(assets)
    return problems
