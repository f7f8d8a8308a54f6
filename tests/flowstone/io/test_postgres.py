"""The PostgreSQL IO manager: JSON values, typed rows, schema-qualified names, hostile names."""

from __future__ import annotations

import datetime as dt
import io
import threading
import uuid
from decimal import Decimal
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from psycopg import sql

import flowstone
from flowstone.errors import DefinitionError, IOManagerError
from flowstone.io import IOTarget
from flowstone.io.postgres import DEFAULT_STORE_TABLE, PostgresIOManager
from flowstone.partitions import encode_partition_key
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

KEYS = [
    "",
    encode_partition_key("a|b"),
    encode_partition_key("日本/..|x"),
    encode_partition_key(("tenant|1", dt.date(2025, 1, 2))),
]
HOSTILE_NAMES = [
    ('a"; DROP TABLE x;--', "is not a valid name"),
    ("x.y.z", "has 3 dot-separated parts"),
    ("", "must not be empty"),
    ("a" * 64, "has a part of 64 characters; PostgreSQL names are at most 63"),
    ("s." + "b" * 70, "has a part of 70 characters"),
    ("quo'te", "is not a valid name"),
    ('dou"ble', "is not a valid name"),
    ("with space", "is not a valid name"),
    ("schema.", "has an empty part"),
    (".table", "has an empty part"),
    ("1table", "is not a valid name"),
    ("tab\x00le", "is not a valid name"),
]


def _fetch(query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall())


def _tables() -> set[str]:
    return {
        f"{schema}.{name}"
        for schema, name in _fetch(
            "SELECT schemaname, tablename FROM pg_catalog.pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
    }


def _column_types(schema: str, table: str) -> dict[str, str]:
    return dict(
        _fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            [schema, table],
        )
    )


@pytest.fixture
def manager() -> PostgresIOManager:
    return PostgresIOManager()


@pytest.mark.parametrize("partition_key", KEYS)
@pytest.mark.parametrize(
    "value", [{"name": "Zoë", "tags": ["日本", "|"], "n": 1.5}, [1, None, True], "text ✓", 42]
)
def test_json_round_trip(manager: PostgresIOManager, partition_key: str, value: object) -> None:
    target = IOTarget(asset="orders", partition_key=partition_key)
    assert not manager.exists(target)
    stored = manager.store(target, value)
    assert stored.uri.startswith("postgresql://")
    assert f"/{DEFAULT_STORE_TABLE}?asset=orders&partition_key=" in stored.uri
    assert stored.row_count == (len(value) if isinstance(value, list) else None)
    assert stored.content_hash is not None
    assert stored.content_hash.startswith("sha256:")
    assert manager.exists(target)
    assert manager.load(target) == value
    manager.delete(target)
    assert not manager.exists(target)
    manager.delete(target)


def test_the_default_table_is_created_by_flowstone(manager: PostgresIOManager) -> None:
    assert f"public.{DEFAULT_STORE_TABLE}" not in _tables()
    assert not manager.exists(IOTarget(asset="orders", partition_key=""))
    manager.store(IOTarget(asset="orders", partition_key=""), {"v": 1})
    assert f"public.{DEFAULT_STORE_TABLE}" in _tables()
    assert _column_types("public", DEFAULT_STORE_TABLE)["value"] == "jsonb"


def test_restore_overwrites_without_duplicates(manager: PostgresIOManager) -> None:
    target = IOTarget(asset="orders", partition_key=encode_partition_key("a|b"))
    manager.store(target, {"v": 1})
    manager.store(target, {"v": 2})
    assert manager.load(target) == {"v": 2}
    query = f"SELECT value::text FROM {DEFAULT_STORE_TABLE} WHERE asset = %s"  # noqa: S608
    rows = _fetch(query, ["orders"])
    assert rows == [('{"v": 2}',)]


def test_missing_value_is_a_permanent_error(manager: PostgresIOManager) -> None:
    manager.store(IOTarget(asset="other", partition_key=""), 1)
    with pytest.raises(IOManagerError, match="no stored value for asset 'orders'") as caught:
        manager.load(IOTarget(asset="orders", partition_key=""))
    assert caught.value.retryable is False


def test_value_postgres_refuses_is_a_permanent_error(manager: PostgresIOManager) -> None:
    target = IOTarget(asset="orders", partition_key="")
    manager.store(target, {"v": 1})
    with pytest.raises(IOManagerError, match="could not store asset 'orders'") as caught:
        manager.store(target, {"v": "nul \x00 inside"})  # jsonb cannot hold \u0000
    assert caught.value.retryable is False
    assert manager.load(target) == {"v": 1}


ROWS = [
    {
        "id": 1,
        "city": "Zürich",
        "price": 1.5,
        "exact": Decimal("2.50"),
        "active": True,
        "day": dt.date(2025, 1, 2),
        "at": dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.UTC),
        "extra": {"tags": ["a|b"]},
        "note": None,
    },
    {
        "id": 2,
        "city": "a|b",
        "price": None,
        "exact": Decimal("3.00"),
        "active": False,
        "day": None,
        "at": None,
        "extra": [1, 2],
        "note": "ünïcode",
    },
]


def test_rows_round_trip_in_typed_columns(manager: PostgresIOManager) -> None:
    target = IOTarget(
        asset="orders", partition_key=encode_partition_key("日本|1"), options={"table": "orders"}
    )
    stored = manager.store(target, ROWS)
    assert stored.row_count == 2
    assert "/orders?asset=orders&partition_key=" in stored.uri
    assert manager.load(target) == ROWS
    assert _column_types("public", "orders") == {
        "partition_key": "text",
        "flowstone_row": "integer",
        "id": "bigint",
        "city": "text",
        "price": "double precision",
        "exact": "numeric",
        "active": "boolean",
        "day": "date",
        "at": "timestamp with time zone",
        "extra": "jsonb",
        "note": "text",
    }


def test_restoring_rows_replaces_the_slice_only(manager: PostgresIOManager) -> None:
    options = {"table": "events", "partition_column": "day_key"}
    first = IOTarget(asset="events", partition_key=encode_partition_key("a|b"), options=options)
    second = IOTarget(asset="events", partition_key=encode_partition_key("c"), options=options)
    manager.store(first, [{"n": 1}, {"n": 2}, {"n": 3}])
    manager.store(second, [{"n": 10}])
    manager.store(first, [{"n": 4}, {"n": 5}])
    manager.store(first, [{"n": 4}, {"n": 5}])
    assert manager.load(first) == [{"n": 4}, {"n": 5}]
    assert manager.load(second) == [{"n": 10}]
    assert _fetch("SELECT day_key, n FROM events ORDER BY n") == [
        ("s:a|b", 4),
        ("s:a|b", 5),
        ("s:c", 10),
    ]
    manager.delete(first)
    assert not manager.exists(first)
    assert _fetch("SELECT n FROM events") == [(10,)]


def test_empty_rows_are_stored_and_loaded(manager: PostgresIOManager) -> None:
    target = IOTarget(asset="quiet", partition_key="", options={"table": "quiet_rows"})
    manager.store(target, [])
    assert manager.exists(target)
    assert manager.load(target) == []
    manager.store(target, [{"n": 1}])
    manager.store(target, [])
    assert manager.load(target) == []


def test_arrow_and_pandas_values_go_into_typed_columns(manager: PostgresIOManager) -> None:
    table = pa.table({"id": [1, 2], "name": ["ä", "|"]})
    frame = pd.DataFrame({"id": [3], "name": ["ö"]})
    arrow_target = IOTarget(asset="t", partition_key="s:1", options={"table": "named"})
    frame_target = IOTarget(asset="t", partition_key="s:2", options={"table": "named"})
    assert manager.store(arrow_target, table).row_count == 2
    assert manager.store(frame_target, frame).row_count == 1
    assert manager.load(arrow_target) == [{"id": 1, "name": "ä"}, {"id": 2, "name": "|"}]
    assert manager.load(frame_target) == [{"id": 3, "name": "ö"}]


def test_schema_qualified_names_work() -> None:
    schema = f"fs_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {schema}")
    manager = PostgresIOManager(table=f"{schema}.values")
    json_target = IOTarget(asset="orders", partition_key="s:a|b")
    rows_target = IOTarget(
        asset="orders", partition_key="s:a|b", options={"table": f"{schema}.order_rows"}
    )
    manager.store(json_target, {"v": "ü"})
    assert manager.load(json_target) == {"v": "ü"}
    manager.store(rows_target, [{"id": 1}])
    assert manager.load(rows_target) == [{"id": 1}]
    assert {f"{schema}.values", f"{schema}.order_rows"} <= _tables()
    assert f"public.{DEFAULT_STORE_TABLE}" not in _tables()


def test_a_missing_schema_is_a_clear_permanent_error(manager: PostgresIOManager) -> None:
    target = IOTarget(asset="orders", partition_key="", options={"table": "nowhere.rows"})
    with pytest.raises(IOManagerError, match='schema "nowhere" does not exist') as caught:
        manager.store(target, [{"id": 1}])
    assert caught.value.retryable is False


@pytest.mark.parametrize(("name", "problem"), HOSTILE_NAMES)
def test_hostile_table_names_are_refused_before_any_sql(
    manager: PostgresIOManager, name: str, problem: str
) -> None:
    tables = _tables()
    (reported,) = manager.validate_options({"table": name})
    assert problem in reported
    target = IOTarget(asset="orders", partition_key="", options={"table": name})
    with CaptureQueriesContext(connection) as queries:
        for action in (
            lambda: manager.store(target, [{"id": 1}]),
            lambda: manager.load(target),
            lambda: manager.exists(target),
            lambda: manager.delete(target),
        ):
            with pytest.raises(IOManagerError, match="invalid IO options for asset 'orders'") as e:
                action()
            assert problem in e.value.message
            assert e.value.retryable is False
    assert queries.captured_queries == []
    assert _tables() == tables


@pytest.mark.parametrize(("name", "problem"), HOSTILE_NAMES)
def test_hostile_manager_table_is_refused_when_configured(name: str, problem: str) -> None:
    with pytest.raises(DefinitionError, match="table") as caught:
        PostgresIOManager(table=name)
    assert problem in caught.value.message


@pytest.mark.parametrize(
    ("column", "problem"),
    [
        ('a"; DROP TABLE x;--', "is not a valid name"),
        ("b" * 64, "is 64 characters long"),
        ("with space", "is not a valid name"),
        ("", "must not be empty"),
        ("flowstone_row", "is reserved for the partition key and row order"),
        ("partition_key", "is reserved for the partition key and row order"),
    ],
)
def test_hostile_column_names_in_rows_are_refused_before_any_sql(
    manager: PostgresIOManager, column: str, problem: str
) -> None:
    target = IOTarget(asset="orders", partition_key="", options={"table": "orders"})
    with (
        CaptureQueriesContext(connection) as queries,
        pytest.raises(IOManagerError, match="rows of asset 'orders' cannot be stored") as caught,
    ):
        manager.store(target, [{"id": 1}, {column: 2}])
    assert problem in caught.value.message
    assert queries.captured_queries == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"table": "t", "partition_column": 'p"; --'}, "partition_column 'p\"; --' is not a valid"),
        ({"table": "t", "partition_column": "flowstone_row"}, "must not be 'flowstone_row'"),
        ({"partition_column": "p"}, "partition_column only applies together with table"),
        ({"table": 5}, "table must be a string, not int"),
        ({"tabel": "t"}, "unknown option 'tabel' (known: partition_column, table)"),
    ],
)
def test_other_invalid_options(
    manager: PostgresIOManager, options: dict[str, Any], problem: str
) -> None:
    assert any(problem in reported for reported in manager.validate_options(options))


def test_unsupported_row_values_are_refused(manager: PostgresIOManager) -> None:
    target = IOTarget(asset="orders", partition_key="", options={"table": "orders"})
    with pytest.raises(IOManagerError, match="column 'blob' holds a value that is not one of"):
        manager.store(target, [{"blob": b"bytes"}])
    with pytest.raises(IOManagerError, match="is not tabular"):
        manager.store(target, {"not": "rows"})


def _dsn() -> str:
    params = connection.settings_dict
    return (
        f"host={params['HOST'] or '127.0.0.1'} port={params['PORT'] or 5432} "
        f"dbname={params['NAME']} user={params['USER'] or 'postgres'}"
    )


def _drop_tables(dsn: str, *tables: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.SQL(", ").join(sql.Identifier(table) for table in tables)
            )
        )


def test_concurrent_stores_of_one_partition_never_duplicate_rows() -> None:
    dsn = _dsn()
    table = f"fs_race_{uuid.uuid4().hex[:8]}"
    own = PostgresIOManager(dsn=dsn, table=table)
    target = IOTarget(asset="race", partition_key="s:a|b", options={"table": f"{table}_rows"})
    rows = [{"n": n, "label": "ü|"} for n in range(20)]
    barrier = threading.Barrier(4)
    errors: list[IOManagerError] = []

    def store_repeatedly() -> None:
        barrier.wait()
        for _ in range(5):
            try:
                own.store(target, rows)
            except IOManagerError as exc:  # a lost race would surface here (unique violation)
                errors.append(exc)

    try:
        threads = [threading.Thread(target=store_repeatedly) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert own.load(target) == rows
        with psycopg.connect(dsn) as other:
            count = other.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{table}_rows"))
            ).fetchone()
        assert count == (20,)
    finally:
        _drop_tables(dsn, table, f"{table}_rows")


def test_dsn_connection(manager: PostgresIOManager) -> None:
    params = connection.settings_dict
    dsn = _dsn()
    table = f"fs_dsn_{uuid.uuid4().hex[:8]}"
    own = PostgresIOManager(dsn=dsn, table=table)
    target = IOTarget(asset="orders", partition_key="s:a|b")
    rows_target = IOTarget(
        asset="orders", partition_key="s:a|b", options={"table": f"{table}_rows"}
    )
    try:
        own.store(target, {"v": [1, "ü"]})
        assert own.load(target) == {"v": [1, "ü"]}
        own.store(rows_target, [{"doc": {"k": "v"}, "n": 1}])
        assert own.load(rows_target) == [{"doc": {"k": "v"}, "n": 1}]
        assert own.exists(rows_target)
        own.delete(rows_target)
        assert not own.exists(rows_target)
        assert own.store(target, 2).uri.startswith(f"postgresql://{params['HOST'] or '127.0.0.1'}")
    finally:
        _drop_tables(dsn, table, f"{table}_rows")


def test_unreachable_dsn_is_retryable() -> None:
    own = PostgresIOManager(dsn="host=127.0.0.1 port=1 dbname=x connect_timeout=2")
    with pytest.raises(IOManagerError, match="could not load asset 'orders'") as caught:
        own.load(IOTarget(asset="orders", partition_key=""))
    assert caught.value.retryable is True


def test_unknown_database_alias_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match=r"database 'nope' is not in settings\.DATABASES"):
        PostgresIOManager(database="nope")


def test_demo_runs_on_the_postgres_manager_by_settings_alone(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions(
        "demo.assets",
        io_managers={"default": {"CLASS": "flowstone.io.postgres.PostgresIOManager"}},
        resources={"catalog": {"CLASS": "demo.resources.ProductCatalog", "OPTIONS": {}}},
    )
    out = io.StringIO()
    call_command("demo", stdout=out)
    assert "success (23 steps)" in out.getvalue()
    assert f"/{DEFAULT_STORE_TABLE}?asset=raw_orders&partition_key=d%3A2025-12-03" in out.getvalue()
    assert _fetch(f"SELECT count(*) FROM {DEFAULT_STORE_TABLE}") == [(23,)]  # noqa: S608


def test_queries_go_through_djangos_connection_with_quoted_names(
    manager: PostgresIOManager,
) -> None:
    """The control for the hostile-name tests: the manager's queries are captured there."""
    target = IOTarget(asset="orders", partition_key="s:x", options={"table": "Mixed_Case"})
    with CaptureQueriesContext(connection) as queries:
        manager.store(target, [{"Id": 1}])
    statements = [query["sql"] for query in queries.captured_queries]
    assert any('CREATE TABLE IF NOT EXISTS "Mixed_Case"' in sql for sql in statements)
    assert any('DELETE FROM "Mixed_Case" WHERE "partition_key" = ' in sql for sql in statements)
    assert manager.load(target) == [{"Id": 1}]


def test_run_time_io_overrides_are_checked_before_any_sql(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions(
        "tests.pipelines.diamond",
        io_managers={"default": {"CLASS": "flowstone.io.postgres.PostgresIOManager"}},
    )
    tables = _tables()
    result = flowstone.materialize(
        "source", "a|b:c", io_overrides={"source": {"table": 'a"; DROP TABLE x;--'}}
    )
    (step,) = result.steps
    assert step.status == "failed"
    assert step.error is not None
    assert step.error.kind == "io_error"
    assert step.error.retryable is False
    assert step.error.message.startswith("invalid IO options for asset 'source': table ")
    assert _tables() == tables

    flowstone.materialize("source", "a|b:c").raise_for_status()
    query = f"SELECT partition_key FROM {DEFAULT_STORE_TABLE} WHERE asset = 'source'"  # noqa: S608
    assert _fetch(query) == [("s:a|b:c",)]
