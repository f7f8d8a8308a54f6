"""The asset registry: the single source of truth for what assets exist.

It is built once from the modules named in ``FLOWSTONE["DEFINITIONS"]`` (plus the configured IO
managers and resources), validated, and then frozen. ``get_registry()`` caches it until the
``FLOWSTONE`` setting changes. Looking an asset up never imports anything.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

from django.utils.module_loading import import_string

from flowstone.conf import flowstone_settings
from flowstone.definitions import AssetDefinition, definition_of
from flowstone.errors import AssetNotFoundError, DefinitionError
from flowstone.graph import AssetGraph
from flowstone.io.base import IOManager
from flowstone.resources import ResourceConfig
from flowstone.validation import DefinitionProblem, validate_definitions


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


def build_io_managers(entries: Mapping[str, Any]) -> dict[str, IOManager]:
    """Instantiate the configured IO managers and check they follow the protocol."""
    managers: dict[str, IOManager] = {}
    for name, (cls, options) in _configured("IO_MANAGERS", entries).items():
        manager = cls(**options)
        if not isinstance(manager, IOManager):
            raise DefinitionError(
                f"FLOWSTONE['IO_MANAGERS'][{name!r}]: {cls.__name__} does not implement "
                "store/load/exists/delete"
            )
        managers[name] = manager
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

    @classmethod
    def build(
        cls,
        definitions: Iterable[AssetDefinition],
        *,
        io_managers: Mapping[str, IOManager],
        resources: Mapping[str, ResourceConfig],
    ) -> Registry:
        """Validate ``definitions`` and freeze them; raise ``DefinitionError`` listing problems."""
        found = list(definitions)
        problems = validate_definitions(found, io_managers=io_managers, resources=resources)
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


def find_problems() -> list[DefinitionProblem]:
    """Return every problem with the configured definitions, without raising (for checks)."""
    try:
        modules = import_definition_modules(flowstone_settings.DEFINITIONS)
        io_managers = build_io_managers(flowstone_settings.IO_MANAGERS)
        resources = build_resource_configs(flowstone_settings.RESOURCES)
    except DefinitionError as exc:
        return [
            DefinitionProblem(
                id="flowstone.E007",
                message=exc.message,
                hint="Fix the FLOWSTONE setting or the module it names.",
                obj="FLOWSTONE",
            )
        ]
    return validate_definitions(
        collect_definitions(modules), io_managers=io_managers, resources=resources
    )


@functools.cache
def get_registry() -> Registry:
    """Return the registry built from settings, building and validating it on first use."""
    modules = import_definition_modules(flowstone_settings.DEFINITIONS)
    return Registry.build(
        collect_definitions(modules),
        io_managers=build_io_managers(flowstone_settings.IO_MANAGERS),
        resources=build_resource_configs(flowstone_settings.RESOURCES),
    )


flowstone_settings.on_reload(get_registry.cache_clear)
