"""Fixtures of the fault suite: the private servers (once per session) and one scenario per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FAST, LONG, Cluster, Mode, Scenario
from tests.faults.servers import PrivatePostgres, PrivateRedis, ServerUnavailableError

REPORT_LINES = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def fault_mode(request: pytest.FixtureRequest) -> Mode:
    """Fast by default; ``--long`` for 1,000 steps per scenario."""
    return LONG if request.config.getoption("--long") else FAST


@pytest.fixture(scope="session")
def fault_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where scenarios keep their data, logs and the report (``FLOWSTONE_FAULT_ROOT`` to keep)."""
    kept = os.environ.get("FLOWSTONE_FAULT_ROOT")
    if kept:
        path = Path(kept)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def cluster(fault_root: Path) -> Iterator[Cluster]:
    """A private PostgreSQL and Redis on loopback, and a migrated template database."""
    postgres = PrivatePostgres()
    redis_server = PrivateRedis()
    try:
        try:
            postgres.initialize()
            redis_server.initialize()
        except ServerUnavailableError as exc:
            pytest.skip(f"the fault suite needs its own servers: {exc}")
        started = Cluster(postgres=postgres, redis=redis_server)
        started.migrate_template(fault_root / "migrate")
        yield started
    finally:
        redis_server.remove()
        postgres.remove()


@pytest.fixture
def open_scenario(
    request: pytest.FixtureRequest, cluster: Cluster, fault_mode: Mode, fault_root: Path
) -> Iterator[Scenario]:
    """A fresh scenario named after the test; every process it started is stopped afterwards."""
    name = request.node.name.removeprefix("test_")
    scenario = Scenario(name=name, cluster=cluster, mode=fault_mode, root=fault_root)
    try:
        yield scenario
    finally:
        scenario.close()
        if scenario.summary:
            request.config.stash.setdefault(REPORT_LINES, []).append(scenario.summary)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print every scenario's line at the end of the run."""
    lines = config.stash.get(REPORT_LINES, [])
    if not lines:
        return
    terminalreporter.section("fault scenarios")
    for line in lines:
        terminalreporter.write_line(line)
