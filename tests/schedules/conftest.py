"""Fixtures for the scheduling tests: the scheduling pipeline."""

from __future__ import annotations

import pytest

from flowstone.registry import Registry, get_registry
from tests.conftest import UseDefinitions

PIPELINE = "tests.pipelines.scheduled"


@pytest.fixture
def registry(use_definitions: UseDefinitions) -> Registry:
    """The registry of the scheduling pipeline (filesystem IO in a temporary directory)."""
    use_definitions(PIPELINE)
    return get_registry()
