"""The asset registry: the single source of truth for what assets exist.

It is built once from the modules named in ``FLOWSTONE["DEFINITIONS"]`` (plus the configured IO
managers and resources), validated, and then frozen. The same modules' ``@schedule`` and sensor
functions are collected alongside the assets. ``get_registry()`` caches it until the
``FLOWSTONE`` setting changes. Looking an asset up never imports anything.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any, Final

from django.utils.module_loading import import_string

from flowstone.conf import flowstone_settings
from flowstone.definitions import AssetDefinition, definition_of
from flowstone.errors import (
    AssetNotFoundError,
    DefinitionError,
    FlowStoneError,
    ValidationFailedError,
)
from flowstone.graph import AssetGraph
from flowstone.io.base import IOManager
from flowstone.resources import ResourceConfig
from flowstone.scheduling import ScheduleDefinition, SensorDefinition, schedule_of, sensor_of
from flowstone.validation import DefinitionProblem, validate_definitions, validate_schedules

IO_MANAGER_METHODS: Final = ("store", "load", "exists", "delete")


def import_definition_modules(paths: Iterable[str]) -> list[ModuleType]:
    """Import the configured definition modules (trusted settings, never payloads)."""
    modules = []
    for path in paths:
        try:
            modules.append(importlib.import_module(path))
        except DefinitionError as exc:
            raise DefinitionError(f"in definitions module {path!r}: {exc.message}") from exc
        except ImportError as exc:
            raise DefinitionError(
                f"cannot import definitions module {path!r} listed in FLOWSTONE['DEFINITIONS']: "
                f"{exc}"
            ) from exc
    return modules


def collect_definitions(modules: Iterable[ModuleType]) -> list[AssetDefinition]:
    """Return the asset definitions of functions defined in ``modules`` (not re-exports)."""
    found: list[AssetDefinition] = []
    for module in modules:
        for value in vars(module).values():
            definition = definition_of(value)
            if definition is not None and definition.module == module.__name__:
                found.append(definition)
    return found


def collect_schedules(modules: Iterable[ModuleType]) -> list[ScheduleDefinition]:
    """Return the ``@schedule`` definitions of functions defined in ``modules``."""
    return [
        definition
        for module in modules
        for value in vars(module).values()
        if (definition := schedule_of(value)) is not None and definition.module == module.__name__
    ]


def collect_sensors(modules: Iterable[ModuleType]) -> list[SensorDefinition]:
    """Return the sensor definitions of functions defined in ``modules``."""
    return [
        definition
        for module in modules
        for value in vars(module).values()
        if (definition := sensor_of(value)) is not None and definition.module == module.__name__
    ]


def _configured(
    kind: str, entries: Mapping[str, Any]
) -> dict[str, tuple[type[Any], dict[str, Any]]]:
    """Import the class of each ``{"CLASS": ..., "OPTIONS": ...}`` settings entry."""
    loaded: dict[str, tuple[type[Any], dict[str, Any]]] = {}
    for name, entry in entries.items():
        if not isinstance(entry, Mapping) or "CLASS" not in entry:
            raise DefinitionError(
                f"FLOWSTONE[{kind!r}][{name!r}] must be a dict with 'CLASS' and optional 'OPTIONS'"
            )
        try:
            cls = import_string(str(entry["CLASS"]))
        except ImportError as exc:
            raise DefinitionError(
                f"FLOWSTONE[{kind!r}][{name!r}]: cannot import {entry['CLASS']!r}: {exc}"
            ) from exc
        loaded[name] = (cls, dict(entry.get("OPTIONS") or {}))
    return loaded


def _io_manager_problem(name: str, message: str, hint: str) -> DefinitionProblem:
    return DefinitionProblem(
        id="flowstone.E008", message=message, hint=hint, obj=f"FLOWSTONE['IO_MANAGERS'][{name!r}]"
    )


def _load_io_manager(name: str, entry: object) -> IOManager | DefinitionProblem:
    """Import and instantiate one configured IO manager, or say why it cannot be used."""
    settings_hint = f"Fix FLOWSTONE['IO_MANAGERS'][{name!r}]; see docs/io-managers.md."
    if not isinstance(entry, Mapping) or "CLASS" not in entry:
        return _io_manager_problem(
            name,
            f"IO manager {name!r} must be a dict with 'CLASS' and optional 'OPTIONS'",
            settings_hint,
        )
    path = str(entry["CLASS"])
    options = entry.get("OPTIONS") or {}
    try:
        cls = import_string(path)
    except ImportError as exc:
        return _io_manager_problem(
            name, f"IO manager {name!r}: cannot import {path!r}: {exc}", settings_hint
        )
    if not isinstance(options, Mapping):
        return _io_manager_problem(
            name, f"IO manager {name!r} ({path}): OPTIONS must be a dict", settings_hint
        )
    try:
        manager = cls(**options)
    except (TypeError, ValueError, FlowStoneError) as exc:
        reason = exc.message if isinstance(exc, FlowStoneError) else str(exc)
        return _io_manager_problem(
            name, f"IO manager {name!r} ({path}) rejects its OPTIONS: {reason}", settings_hint
        )
    if not isinstance(manager, IOManager):
        missing = [method for method in IO_MANAGER_METHODS if not hasattr(manager, method)]
        return _io_manager_problem(
            name,
            f"IO manager {name!r} ({path}) does not implement store/load/exists/delete "
            f"(missing: {', '.join(missing)})",
            "Implement the flowstone.io.IOManager protocol, or point CLASS at a class that does.",
        )
    return manager


def load_io_managers(
    entries: Mapping[str, Any],
) -> tuple[dict[str, IOManager], list[DefinitionProblem]]:
    """Instantiate the configured IO managers; report each one that cannot be used (E008)."""
    managers: dict[str, IOManager] = {}
    problems: list[DefinitionProblem] = []
    for name, entry in entries.items():
        loaded = _load_io_manager(name, entry)
        if isinstance(loaded, DefinitionProblem):
            problems.append(loaded)
        else:
            managers[name] = loaded
    return managers, problems


def build_io_managers(entries: Mapping[str, Any]) -> dict[str, IOManager]:
    """Instantiate the configured IO managers; raise ``DefinitionError`` if any is unusable."""
    managers, problems = load_io_managers(entries)
    if problems:
        raise DefinitionError(
            "invalid IO managers:\n" + "\n".join(f"  {p}" for p in problems),
            details={"problems": [p.id for p in problems]},
        )
    return managers


def build_resource_configs(entries: Mapping[str, Any]) -> dict[str, ResourceConfig]:
    """Read the configured resources (instantiated per step, not here)."""
    return {
        name: ResourceConfig(name=name, resource_class=cls, options=MappingProxyType(options))
        for name, (cls, options) in _configured("RESOURCES", entries).items()
    }


@dataclass(frozen=True, slots=True)
class Registry:
    """Validated, frozen asset definitions with their graph, IO managers and resources."""

    assets: Mapping[str, AssetDefinition]
    graph: AssetGraph
    io_managers: Mapping[str, IOManager]
    resources: Mapping[str, ResourceConfig]
    schedules: Mapping[str, ScheduleDefinition] = field(
        default_factory=lambda: MappingProxyType({})
    )
    sensors: Mapping[str, SensorDefinition] = field(default_factory=lambda: MappingProxyType({}))
    concurrency_limits: Mapping[str, int] = field(init=False, compare=False, repr=False)
    """Each asset with a ``concurrency_limit``, and that limit (derived, read on every step)."""
    checkpoint_inputs: frozenset[str] = field(init=False, compare=False, repr=False)
    """The assets a checkpointed asset reads (derived): only their successes can outdate an
    approval, so only theirs look for approvals to mark stale."""

    def __post_init__(self) -> None:
        limits = {
            name: definition.spec.concurrency_limit
            for name, definition in self.assets.items()
            if definition.spec.concurrency_limit is not None
        }
        object.__setattr__(self, "concurrency_limits", MappingProxyType(limits))
        gated = [name for name, definition in self.assets.items() if definition.checkpoint]
        inputs = frozenset(dep for name in gated for dep in self.graph.upstreams.get(name, ()))
        object.__setattr__(self, "checkpoint_inputs", inputs)

    @classmethod
    def build(
        cls,
        definitions: Iterable[AssetDefinition],
        *,
        io_managers: Mapping[str, IOManager],
        resources: Mapping[str, ResourceConfig],
        schedules: Iterable[ScheduleDefinition] = (),
        sensors: Iterable[SensorDefinition] = (),
    ) -> Registry:
        """Validate ``definitions`` and freeze them; raise ``DefinitionError`` listing problems."""
        found = list(definitions)
        found_schedules, found_sensors = list(schedules), list(sensors)
        problems = validate_definitions(found, io_managers=io_managers, resources=resources)
        problems += validate_schedules(found_schedules, found_sensors, {d.name: d for d in found})
        if problems:
            raise DefinitionError(
                "invalid asset definitions:\n" + "\n".join(f"  {p}" for p in problems),
                details={"problems": [p.id for p in problems]},
            )
        assets = {d.name: d for d in found}
        return cls(
            assets=MappingProxyType(assets),
            graph=AssetGraph.build({name: d.spec.deps for name, d in assets.items()}),
            io_managers=MappingProxyType(dict(io_managers)),
            resources=MappingProxyType(dict(resources)),
            schedules=MappingProxyType({d.name: d for d in found_schedules}),
            sensors=MappingProxyType({d.name: d for d in found_sensors}),
        )

    def get(self, name: object) -> AssetDefinition:
        """Return the asset called ``name``; raise ``AssetNotFoundError`` for anything else."""
        definition = self.assets.get(name) if isinstance(name, str) else None
        if definition is None:
            shown = name if isinstance(name, str) else repr(name)
            raise AssetNotFoundError(
                f"unknown asset {str(shown)[:200]!r}",
                asset=shown[:200] if isinstance(shown, str) else None,
            )
        return definition

    def io_manager_for(self, definition: AssetDefinition) -> IOManager:
        """Return the IO manager an asset stores its values with."""
        return self.io_managers[definition.spec.io_manager]

    def get_schedule(self, name: object) -> ScheduleDefinition:
        """Return the schedule called ``name``; raise ``ValidationFailedError`` otherwise."""
        definition = self.schedules.get(name) if isinstance(name, str) else None
        if definition is None:
            raise ValidationFailedError(f"unknown schedule {str(name)[:200]!r}")
        return definition

    def get_sensor(self, name: object) -> SensorDefinition:
        """Return the sensor called ``name``; raise ``ValidationFailedError`` otherwise."""
        definition = self.sensors.get(name) if isinstance(name, str) else None
        if definition is None:
            raise ValidationFailedError(f"unknown sensor {str(name)[:200]!r}")
        return definition


def find_problems() -> list[DefinitionProblem]:
    """Return every problem with the configured definitions, without raising (for checks)."""
    problems: list[DefinitionProblem] = []
    try:
        modules = import_definition_modules(flowstone_settings.DEFINITIONS)
        resources = build_resource_configs(flowstone_settings.RESOURCES)
    except DefinitionError as exc:
        modules, resources = [], {}
        problems.append(
            DefinitionProblem(
                id="flowstone.E007",
                message=exc.message,
                hint="Fix the FLOWSTONE setting or the module it names.",
                obj="FLOWSTONE",
            )
        )
    io_managers, io_problems = load_io_managers(flowstone_settings.IO_MANAGERS)
    problems += io_problems
    if problems:
        return problems
    definitions = collect_definitions(modules)
    return validate_definitions(
        definitions, io_managers=io_managers, resources=resources
    ) + validate_schedules(
        collect_schedules(modules), collect_sensors(modules), {d.name: d for d in definitions}
    )


@functools.cache
def get_registry() -> Registry:
    """Return the registry built from settings, building and validating it on first use."""
    modules = import_definition_modules(flowstone_settings.DEFINITIONS)
    return Registry.build(
        collect_definitions(modules),
        io_managers=build_io_managers(flowstone_settings.IO_MANAGERS),
        resources=build_resource_configs(flowstone_settings.RESOURCES),
        schedules=collect_schedules(modules),
        sensors=collect_sensors(modules),
    )


flowstone_settings.on_reload(get_registry.cache_clear)
