"""Every definition check id, with its exact message, through Django's system checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.core.checks import Error, Warning  # noqa: A004  # Django's class
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from flowstone.checks import (
    check_definitions,
    check_fencing,
    check_step_log,
    check_worker_window,
)

if TYPE_CHECKING:
    from pytest_django import Settings

    from tests.conftest import UseDefinitions

P = "tests.pipelines.invalid"


def _errors(use_definitions: UseDefinitions, *modules: str) -> list[Error]:
    use_definitions(*modules, resources={})
    return [m for m in check_definitions() if isinstance(m, Error)]


def test_valid_definitions_pass(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diamond")
    assert check_definitions() == []
    call_command("check")


def test_e001_duplicate_names(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.dup_a", f"{P}.dup_b")
    assert error.id == "flowstone.E001"
    assert error.msg == (
        "asset 'thing' is defined more than once: "
        "tests.pipelines.invalid.dup_a.thing, tests.pipelines.invalid.dup_b.other_thing"
    )
    assert error.obj == "thing"


def test_e002_unknown_dependency(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.unknown_dep")
    assert error.id == "flowstone.E002"
    assert error.msg == "asset 'orphan' depends on unknown asset 'missing_upstream'"


def test_e003_cycle(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.cycle")
    assert error.id == "flowstone.E003"
    assert error.msg == "assets form a dependency cycle: chicken -> egg -> chicken"


def test_e004_unknown_io_manager(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.unknown_io")
    assert error.id == "flowstone.E004"
    assert error.msg == "asset 'lost' uses unknown IO manager 'nowhere'"
    assert error.hint == "Configure it in FLOWSTONE['IO_MANAGERS'] (known: default, memory)."


def test_e005_missing_resource(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.missing_resource")
    assert error.id == "flowstone.E005"
    assert error.msg == "asset 'needs_warehouse' requires missing resource 'warehouse'"
    assert error.hint == "Configure it in FLOWSTONE['RESOURCES'] (known: none)."


def test_e006_partition_mismatch_without_mapping(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.partition_mismatch")
    assert error.id == "flowstone.E006"
    assert error.msg.startswith("asset 'weekly_rollup' (")
    assert error.msg.endswith(
        "and its upstream 'daily_events' ("
        + error.msg.split("and its upstream 'daily_events' (")[1]
    )
    assert "are partitioned differently and no mapping is declared" in error.msg
    assert str(error.hint).startswith("Pass partition_mappings={'daily_events': ...}")


def test_e006_mapping_that_cannot_apply(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.mapping_misfit")
    assert error.id == "flowstone.E006"
    assert error.msg.startswith("asset 'misfit': the mapping for 'letters' cannot apply: ")


def test_e007_unimportable_module(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.does_not_exist")
    assert error.id == "flowstone.E007"
    assert error.msg.startswith(
        "cannot import definitions module 'tests.pipelines.invalid.does_not_exist' listed in "
        "FLOWSTONE['DEFINITIONS']"
    )


def test_e007_invalid_name_in_module(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.bad_name")
    assert error.id == "flowstone.E007"
    assert error.msg.startswith(
        "in definitions module 'tests.pipelines.invalid.bad_name': invalid asset name 'bad-name'"
    )


def test_e007_invalid_review_form_in_module(use_definitions: UseDefinitions) -> None:
    (error,) = _errors(use_definitions, f"{P}.bad_form")
    assert error.id == "flowstone.E007"
    assert "the checkpoint form is not a valid JSON Schema at /properties/amount/type" in error.msg
    with pytest.raises(SystemCheckError, match="not a valid JSON Schema"):
        call_command("check")


@pytest.mark.parametrize(
    ("module", "check_id"),
    [
        ("dup_a,dup_b", "flowstone.E001"),
        ("unknown_dep", "flowstone.E002"),
        ("cycle", "flowstone.E003"),
        ("unknown_io", "flowstone.E004"),
        ("missing_resource", "flowstone.E005"),
        ("partition_mismatch", "flowstone.E006"),
        ("does_not_exist", "flowstone.E007"),
    ],
)
def test_manage_py_check_fails_on_each(
    use_definitions: UseDefinitions, module: str, check_id: str
) -> None:
    use_definitions(*(f"{P}.{m}" for m in module.split(",")), resources={})
    with pytest.raises(SystemCheckError, match=check_id.replace(".", r"\.")):
        call_command("check")


MEMORY = {"CLASS": "flowstone.io.MemoryIOManager", "OPTIONS": {}}
OBJECTS = {"CLASS": "flowstone.io.s3.S3IOManager", "OPTIONS": {"bucket": "flowstone-checks"}}


def _io_errors(use_definitions: UseDefinitions, module: str, **managers: object) -> list[Error]:
    use_definitions(module, resources={}, io_managers={"default": MEMORY, **managers})
    return [m for m in check_definitions() if isinstance(m, Error)]


def test_e008_io_manager_without_the_protocol(use_definitions: UseDefinitions) -> None:
    not_a_manager = {"CLASS": "flowstone.errors.FlowStoneError", "OPTIONS": {"message": "x"}}
    (error,) = _io_errors(use_definitions, "tests.pipelines.diamond", broken=not_a_manager)
    assert error.id == "flowstone.E008"
    assert error.msg == (
        "IO manager 'broken' (flowstone.errors.FlowStoneError) does not implement "
        "store/load/exists/delete (missing: store, load, exists, delete)"
    )
    assert error.obj == "FLOWSTONE['IO_MANAGERS']['broken']"
    assert error.hint == (
        "Implement the flowstone.io.IOManager protocol, or point CLASS at a class that does."
    )


def test_e008_io_manager_that_cannot_be_imported(use_definitions: UseDefinitions) -> None:
    missing = {"CLASS": "flowstone.io.nowhere.NowhereIOManager"}
    (error,) = _io_errors(use_definitions, "tests.pipelines.diamond", broken=missing)
    assert error.id == "flowstone.E008"
    assert error.msg.startswith(
        "IO manager 'broken': cannot import 'flowstone.io.nowhere.NowhereIOManager': "
    )
    assert error.hint == "Fix FLOWSTONE['IO_MANAGERS']['broken']; see docs/io-managers.md."


def test_e008_io_manager_that_rejects_its_options(use_definitions: UseDefinitions) -> None:
    bad = {"CLASS": "flowstone.io.s3.S3IOManager", "OPTIONS": {"bucket": "Bad_Bucket"}}
    (error,) = _io_errors(use_definitions, "tests.pipelines.diamond", objects=bad)
    assert error.id == "flowstone.E008"
    assert error.msg == (
        "IO manager 'objects' (flowstone.io.s3.S3IOManager) rejects its OPTIONS: bucket "
        "'Bad_Bucket' is not a valid S3 bucket name (3-63 lower-case letters, digits, dots and "
        "hyphens, starting and ending with a letter or digit)"
    )


def test_e008_io_manager_with_an_unknown_option(use_definitions: UseDefinitions) -> None:
    typo = {"CLASS": "flowstone.io.FilesystemIOManager", "OPTIONS": {"base_dri": "var"}}
    (error,) = _io_errors(use_definitions, "tests.pipelines.diamond", files=typo)
    assert error.id == "flowstone.E008"
    assert error.msg.startswith(
        "IO manager 'files' (flowstone.io.FilesystemIOManager) rejects its OPTIONS: "
    )
    assert "base_dri" in error.msg


def test_e009_io_options_invalid_for_the_manager(use_definitions: UseDefinitions) -> None:
    errors = _io_errors(use_definitions, f"{P}.bad_io_options", objects=OBJECTS)
    assert [error.id for error in errors] == ["flowstone.E009", "flowstone.E009"]
    prefix = "asset 'misplaced' has invalid io_options for IO manager 'objects': "
    assert [error.msg for error in errors] == [
        prefix + "unknown option 'colour' (known: bucket, file_format, key_template, prefix)",
        prefix + "bucket 'Not_A_Bucket' is not a valid S3 bucket name (3-63 lower-case letters, "
        "digits, dots and hyphens, starting and ending with a letter or digit)",
    ]
    assert errors[0].obj == "misplaced"
    assert errors[0].hint == (
        "Fix @asset(io_options=...); docs/io-managers.md lists each manager's options."
    )


@pytest.mark.postgres
def test_e009_hostile_table_name(use_definitions: UseDefinitions) -> None:
    warehouse = {"CLASS": "flowstone.io.postgres.PostgresIOManager", "OPTIONS": {}}
    (error,) = _io_errors(use_definitions, f"{P}.hostile_table", warehouse=warehouse)
    assert error.id == "flowstone.E009"
    assert error.msg == (
        "asset 'hostile_rows' has invalid io_options for IO manager 'warehouse': table "
        "'a\"; DROP TABLE x;--' is not a valid name: each part must start with a letter or "
        "underscore, contain only letters, digits and underscores, and be at most 63 characters"
    )


def test_e008_postgres_manager_on_another_database(use_definitions: UseDefinitions) -> None:
    warehouse = {
        "CLASS": "flowstone.io.postgres.PostgresIOManager",
        "OPTIONS": {"database": "nope"},
    }
    (error,) = _io_errors(use_definitions, "tests.pipelines.diamond", warehouse=warehouse)
    assert error.id == "flowstone.E008"
    assert error.msg == (
        "IO manager 'warehouse' (flowstone.io.postgres.PostgresIOManager) rejects its OPTIONS: "
        "database 'nope' is not in settings.DATABASES"
    )


@pytest.mark.parametrize(
    ("module", "managers", "check_id"),
    [
        ("tests.pipelines.diamond", {"broken": {"CLASS": "flowstone.io.nowhere.X"}}, "E008"),
        (f"{P}.bad_io_options", {"objects": OBJECTS}, "E009"),
    ],
)
def test_manage_py_check_fails_on_io_problems(
    use_definitions: UseDefinitions, module: str, managers: dict[str, object], check_id: str
) -> None:
    use_definitions(module, resources={}, io_managers={"default": MEMORY, **managers})
    with pytest.raises(SystemCheckError, match=rf"flowstone\.{check_id}"):
        call_command("check")


def test_w004_every_built_in_manager_is_fenced(use_definitions: UseDefinitions) -> None:
    use_definitions(
        "tests.pipelines.diamond",
        resources={},
        io_managers={
            "default": MEMORY,
            "objects": OBJECTS,
            "files": {"CLASS": "flowstone.io.FilesystemIOManager"},
            "parquet": {"CLASS": "flowstone.io.parquet.ParquetIOManager"},
        },
    )
    assert check_fencing() == []


def test_w004_a_custom_manager_that_neither_versions_nor_fences(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions(
        "tests.pipelines.fencing",
        resources={},
        io_managers={
            "default": MEMORY,
            "custom": {"CLASS": "tests.pipelines.fencing.UnfencedIOManager"},
        },
    )
    (warning,) = check_fencing()
    assert isinstance(warning, Warning)
    assert warning.id == "flowstone.W004"
    assert warning.msg == (
        "IO manager 'custom' (UnfencedIOManager) is not fenced: a worker that lost its step's "
        "lease (stopped, partitioned) can still replace the recorded value"
    )
    assert warning.obj == "FLOWSTONE['IO_MANAGERS']['custom']"
    call_command("check")  # a warning, not an error: check still passes


@pytest.mark.postgres
def test_w004_the_postgres_manager_over_its_own_dsn(use_definitions: UseDefinitions) -> None:
    fenced = {"CLASS": "flowstone.io.postgres.PostgresIOManager"}
    over_dsn = {**fenced, "OPTIONS": {"dsn": "dbname=elsewhere"}}
    use_definitions(
        "tests.pipelines.diamond",
        resources={},
        io_managers={"default": MEMORY, "pg": fenced, "remote": over_dsn},
    )
    assert [w.obj for w in check_fencing()] == ["FLOWSTONE['IO_MANAGERS']['remote']"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STEP_LOG_LEVEL", "info-ish"),
        ("STEP_LOG_LEVEL", None),
        ("STEP_LOG_LEVEL", True),
        ("STEP_LOG_MAX_CHARS", -1),
        ("STEP_LOG_MAX_CHARS", "64k"),
    ],
)
def test_e013_names_a_step_log_setting_no_step_could_log_with(
    settings: Settings, name: str, value: object
) -> None:
    settings.FLOWSTONE = {name: value}

    (error,) = check_step_log()

    assert error.id == "flowstone.E013"
    assert error.obj == f"FLOWSTONE[{name!r}]"
    assert repr(value) in error.msg


@pytest.mark.parametrize("level", ["info", " Warning ", "DEBUG", 15])
def test_a_level_name_in_any_case_or_a_number_is_accepted(
    settings: Settings, level: object
) -> None:
    settings.FLOWSTONE = {"STEP_LOG_LEVEL": level, "STEP_LOG_MAX_CHARS": 0}
    assert check_step_log() == []


@pytest.mark.parametrize(
    ("interval", "window", "warned"), [(10, 60, False), (10, 20, False), (10, 15, True)]
)
def test_w005_a_health_window_shorter_than_two_heartbeats(
    settings: Settings, interval: int, window: int, warned: bool
) -> None:
    settings.FLOWSTONE = {
        "WORKER_HEARTBEAT_SECONDS": interval,
        "WORKER_SEEN_WITHIN_SECONDS": window,
    }
    assert [m.id for m in check_worker_window()] == (["flowstone.W005"] if warned else [])
