"""Resources: named, configured helpers (clients, credentials) injected into asset contexts.

Resources are configured once in ``FLOWSTONE["RESOURCES"]`` as ``{"CLASS": ..., "OPTIONS": {...}}``.
A run may override a resource's options by name; an override that is ``None`` or absent never
replaces the configured default.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flowstone.errors import ResourceUnavailableError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping


@runtime_checkable
class Resource(Protocol):
    """What a resource class provides; ``BaseResource`` implements the no-op defaults."""

    def setup(self) -> None:
        """Acquire what the resource needs (connections, sessions) before first use."""
        ...

    def teardown(self) -> None:
        """Release what ``setup`` acquired; called even when the step failed."""
        ...

    def health_check(self) -> bool:
        """Whether the resource can currently be used."""
        ...


class BaseResource:
    """A resource with no lifecycle; subclass it and override what you need."""

    def setup(self) -> None:
        """Do nothing."""

    def teardown(self) -> None:
        """Do nothing."""

    def health_check(self) -> bool:
        """Report healthy."""
        return True


@dataclass(frozen=True, kw_only=True, slots=True)
class ResourceConfig:
    """A configured resource: its class and default options."""

    name: str
    resource_class: type[Any]
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def build(self, override: Mapping[str, Any] | None = None) -> Any:
        """Instantiate the resource with the default options updated by ``override``."""
        options = {**self.options, **(override or {})}
        try:
            return self.resource_class(**options)
        except TypeError as exc:
            raise ResourceUnavailableError(
                f"resource {self.name!r} rejected its options {sorted(options)}: {exc}"
            ) from exc


class ResourceSet:
    """Attribute access to the resources of one step: ``context.resources.catalog``."""

    def __init__(self, resources: Mapping[str, Any]) -> None:
        self._resources = dict(resources)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._resources[name]
        except KeyError:
            raise ResourceUnavailableError(
                f"resource {name!r} is not available here; declare it with "
                f"@asset(resources=[{name!r}])"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._resources

    def __repr__(self) -> str:
        return f"ResourceSet({sorted(self._resources)})"


@contextmanager
def open_resources(
    required: Collection[str],
    configs: Mapping[str, ResourceConfig],
    overrides: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> Iterator[ResourceSet]:
    """Build and set up the ``required`` resources, and tear them down afterwards."""
    with ExitStack() as stack:
        opened: dict[str, Any] = {}
        for name in sorted(required):
            config = configs.get(name)
            if config is None:
                raise ResourceUnavailableError(f"resource {name!r} is not configured")
            instance = config.build((overrides or {}).get(name))
            setup = getattr(instance, "setup", None)
            if callable(setup):
                try:
                    setup()
                except Exception as exc:
                    raise ResourceUnavailableError(
                        f"resource {name!r} failed its setup: {exc}"
                    ) from exc
            teardown = getattr(instance, "teardown", None)
            if callable(teardown):
                stack.callback(teardown)
            opened[name] = instance
        yield ResourceSet(opened)
