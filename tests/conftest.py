"""Shared fixtures: point FLOWSTONE at test pipelines with storage in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connection

from flowstone.registry import get_registry
from tests.s3 import MotoServer, start_moto_server

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_django import Settings

UseDefinitions = Callable[..., None]

COUNTER_RESOURCE = {
    "CLASS": "tests.pipelines.resources.CountingResource",
    "OPTIONS": {"label": "default"},
}


@pytest.fixture
def use_definitions(settings: Settings, tmp_path: Path) -> Iterator[UseDefinitions]:
    """Configure FLOWSTONE with the given definition modules, filesystem IO in tmp_path."""

    def configure(
        *modules: str,
        resources: Mapping[str, Any] | None = None,
        io_managers: Mapping[str, Any] | None = None,
    ) -> None:
        settings.FLOWSTONE = {
            "DEFINITIONS": list(modules),
            "IO_MANAGERS": dict(
                io_managers
                or {
                    "default": {
                        "CLASS": "flowstone.io.FilesystemIOManager",
                        "OPTIONS": {"base_dir": str(tmp_path / "storage")},
                    },
                    "memory": {"CLASS": "flowstone.io.MemoryIOManager", "OPTIONS": {}},
                }
            ),
            "RESOURCES": dict(
                resources if resources is not None else {"counter": COUNTER_RESOURCE}
            ),
        }

    yield configure
    get_registry.cache_clear()


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    """Where the default filesystem IO manager of ``use_definitions`` writes."""
    return tmp_path / "storage"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--long``: run the fault suite at full size (1,000+ steps per scenario)."""
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="fault suite: 1,000 steps per scenario and a 20 s PostgreSQL outage (slow)",
    )


def is_postgres() -> bool:
    """Whether the tests run against PostgreSQL."""
    return connection.vendor == "postgresql"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``postgres``-marked tests on the embedded SQLite run."""
    if item.get_closest_marker("postgres") is not None and not is_postgres():
        pytest.skip("needs PostgreSQL (this is the embedded SQLite run)")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One S3 server for the session; tests isolate themselves with their own bucket."""
    server = start_moto_server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()
