"""The FLOWSTONE settings namespace."""

from __future__ import annotations

import pytest
from django.test import override_settings

from flowstone.conf import DEFAULTS, flowstone_settings
from flowstone.errors import DefinitionError
from flowstone.registry import get_registry


def test_defaults_apply_when_keys_are_absent() -> None:
    with override_settings(FLOWSTONE={}):
        assert flowstone_settings.DEFINITIONS == []
        assert flowstone_settings.RESOURCES == {}
        assert DEFAULTS["IO_MANAGERS"] == flowstone_settings.IO_MANAGERS


def test_definitions_setting_is_read_at_call_time() -> None:
    with override_settings(FLOWSTONE={"DEFINITIONS": ["tests.pipelines.invalid.dup_a"]}):
        assert set(get_registry().assets) == {"thing"}
    with override_settings(FLOWSTONE={"DEFINITIONS": ["tests.pipelines.invalid.cycle"]}):
        assert flowstone_settings.DEFINITIONS == ["tests.pipelines.invalid.cycle"]
        with pytest.raises(DefinitionError, match=r"flowstone\.E003"):
            get_registry()


def test_io_managers_setting_override() -> None:
    managers = {"default": {"CLASS": "flowstone.io.MemoryIOManager"}}
    with override_settings(FLOWSTONE={"IO_MANAGERS": managers}):
        assert list(get_registry().io_managers) == ["default"]


def test_resources_setting_override() -> None:
    resources = {"counter": {"CLASS": "tests.pipelines.resources.CountingResource"}}
    with override_settings(FLOWSTONE={"RESOURCES": resources}):
        assert list(get_registry().resources) == ["counter"]


def test_unknown_keys_are_an_error() -> None:
    with (
        override_settings(FLOWSTONE={"DEFINITONS": []}),
        pytest.raises(DefinitionError, match="unknown FLOWSTONE setting"),
    ):
        _ = flowstone_settings.DEFINITIONS


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = flowstone_settings.NOPE


def test_bad_io_manager_class_is_a_definition_error() -> None:
    managers = {
        "default": {"CLASS": "flowstone.errors.FlowStoneError", "OPTIONS": {"message": "x"}}
    }
    with (
        override_settings(FLOWSTONE={"IO_MANAGERS": managers}),
        pytest.raises(DefinitionError, match="does not implement store/load/exists/delete"),
    ):
        get_registry()
