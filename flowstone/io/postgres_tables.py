"""The SQL of the PostgreSQL IO manager: statements composed with ``psycopg.sql``, and row typing.

Every statement is built from ``sql.SQL`` literals written here, ``sql.Identifier``s made from
checked names (``flowstone.io.sql_names``) and ``%s`` placeholders for values. Nothing is
formatted into SQL text. Column types of a created rows table come from a fixed list.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from psycopg import sql
from psycopg.types.json import Jsonb

from flowstone.errors import IOManagerError
from flowstone.io.sql_names import identifier_problem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flowstone.io.base import IOTarget
    from flowstone.io.sql_names import QualifiedName

# The column that orders rows within a slice, so a load returns them in the order stored.
ROW_NUMBER_COLUMN: Final = "flowstone_row"
# Python type -> column type of a created rows table; bool before int (bool is an int).
COLUMN_TYPES: Final[tuple[tuple[type, str], ...]] = (
    (bool, "boolean"),
    (int, "bigint"),
    (float, "double precision"),
    (Decimal, "numeric"),
    (dt.date, "date"),  # datetimes are timestamps, decided before this table is consulted
    (dict, "jsonb"),
    (list, "jsonb"),
)
# Type of str columns and of columns whose values are all None.
FALLBACK_TYPE: Final = "text"
JSON_TYPE_OIDS: Final = frozenset({114, 3802})  # json, jsonb
SUPPORTED_VALUE_TYPES: Final = "None, bool, int, float, Decimal, str, date, datetime, dict, list"

RELATION_EXISTS: Final = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = COALESCE(%s, current_schema()) AND c.relname = %s)"
)
# Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog; creators queue here.
LOCK_FOR_CREATE: Final = sql.SQL("SELECT pg_advisory_xact_lock(hashtext(%s))")

__all__ = [
    "JSON_TYPE_OIDS",
    "LOCK_FOR_CREATE",
    "RELATION_EXISTS",
    "ROW_NUMBER_COLUMN",
    "VERSION_COLUMN_EXISTS",
    "RowLayout",
    "add_version_column",
    "create_store_table",
    "delete_entry",
    "select_entry",
    "select_slice",
    "upsert_entry",
]


def create_store_table(table: QualifiedName) -> sql.Composed:
    """FlowStone's own table: one row per asset partition, the JSON value or where its rows are."""
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} ("
        "asset text NOT NULL, "
        "partition_key text NOT NULL, "
        "value jsonb, "
        "rows_table text, "
        "partition_column text, "
        "row_count bigint, "
        "size_bytes bigint NOT NULL, "
        "content_hash text NOT NULL, "
        "stored_at timestamptz NOT NULL DEFAULT now(), "
        "version text NOT NULL DEFAULT '', "
        "PRIMARY KEY (asset, partition_key))"
    ).format(table=table.identifier)


VERSION_COLUMN_EXISTS: Final = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM information_schema.columns "
    "WHERE table_schema = COALESCE(%s, current_schema()) AND table_name = %s "
    "AND column_name = 'version')"
)


def add_version_column(table: QualifiedName) -> sql.Composed:
    """Add the ``version`` column to a store table created before values had versions."""
    return sql.SQL(
        "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS version text NOT NULL DEFAULT ''"
    ).format(table=table.identifier)


def upsert_entry(table: QualifiedName) -> sql.Composed:
    """Insert or replace an asset partition's entry.

    Params: asset, key, value, rows_table, partition_column, row_count, size_bytes, content_hash,
    version.
    """
    return sql.SQL(
        "INSERT INTO {table} (asset, partition_key, value, rows_table, partition_column, "
        "row_count, size_bytes, content_hash, version, stored_at) "
        "VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, now()) "
        "ON CONFLICT (asset, partition_key) DO UPDATE SET "
        "value = EXCLUDED.value, rows_table = EXCLUDED.rows_table, "
        "partition_column = EXCLUDED.partition_column, row_count = EXCLUDED.row_count, "
        "size_bytes = EXCLUDED.size_bytes, content_hash = EXCLUDED.content_hash, "
        "version = EXCLUDED.version, stored_at = EXCLUDED.stored_at"
    ).format(table=table.identifier)


def select_entry(table: QualifiedName, *, for_update: bool = False) -> sql.Composed:
    """An entry's JSON text, rows table, partition column, row count and version.

    Params: asset, key.
    """
    return sql.SQL(
        "SELECT value::text, rows_table, partition_column, row_count, version FROM {table} "
        "WHERE asset = %s AND partition_key = %s{lock}"
    ).format(table=table.identifier, lock=sql.SQL(" FOR UPDATE" if for_update else ""))


def delete_entry(table: QualifiedName) -> sql.Composed:
    """Remove an entry (params: asset, key)."""
    return sql.SQL("DELETE FROM {table} WHERE asset = %s AND partition_key = %s").format(
        table=table.identifier
    )


def _column_type(value: Any) -> str:
    """The SQL type of a column whose first non-null value is ``value``."""
    if isinstance(value, dt.datetime):
        return "timestamp without time zone" if value.tzinfo is None else "timestamptz"
    return next((name for kind, name in COLUMN_TYPES if isinstance(value, kind)), FALLBACK_TYPE)


def _is_supported(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or any(isinstance(value, k) for k, _ in COLUMN_TYPES)
    )


def _hash_default(value: Any) -> str:
    """Canonical text of the non-JSON types a row may hold (for the content hash only)."""
    if isinstance(value, dt.date | Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class RowLayout:
    """Checked rows of one slice: the rows table, its partition column and the data columns."""

    table: QualifiedName
    partition_column: str
    columns: tuple[str, ...]

    @classmethod
    def of(
        cls,
        target: IOTarget,
        rows: Sequence[dict[str, Any]],
        *,
        table: QualifiedName,
        partition_column: str,
    ) -> RowLayout:
        """Check every column name and value type before any SQL runs."""
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        for column in columns:
            problem = identifier_problem(column, what="column")
            if problem is None and column in {partition_column, ROW_NUMBER_COLUMN}:
                problem = f"column {column!r} is reserved for the partition key and row order"
            if problem is None and not all(_is_supported(row.get(column)) for row in rows):
                problem = (
                    f"column {column!r} holds a value that is not one of {SUPPORTED_VALUE_TYPES}"
                )
            if problem is not None:
                raise IOManagerError(
                    f"rows of asset {target.asset!r} cannot be stored in {table}: {problem}",
                    asset=target.asset,
                    partition=target.partition_key,
                    retryable=False,
                )
        return cls(table=table, partition_column=partition_column, columns=tuple(columns))

    def create_table(self, rows: Sequence[dict[str, Any]]) -> sql.Composed:
        """CREATE TABLE IF NOT EXISTS, typed from each column's first non-null value."""
        definitions = [
            sql.SQL("{} text NOT NULL").format(sql.Identifier(self.partition_column)),
            sql.SQL("{} integer NOT NULL").format(sql.Identifier(ROW_NUMBER_COLUMN)),
        ]
        for column in self.columns:
            first = next((row[column] for row in rows if row.get(column) is not None), None)
            definitions.append(
                sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(_column_type(first)))
            )
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {table} ({columns}, PRIMARY KEY ({key}))"
        ).format(
            table=self.table.identifier,
            columns=sql.SQL(", ").join(definitions),
            key=sql.SQL(", ").join(
                [sql.Identifier(self.partition_column), sql.Identifier(ROW_NUMBER_COLUMN)]
            ),
        )

    def delete_slice(self) -> sql.Composed:
        """Delete the rows of one partition (param: partition key)."""
        return sql.SQL("DELETE FROM {table} WHERE {column} = %s").format(
            table=self.table.identifier, column=sql.Identifier(self.partition_column)
        )

    def insert_row(self) -> sql.Composed:
        """Insert one row (params: partition key, row number, then one per column)."""
        names = [self.partition_column, ROW_NUMBER_COLUMN, *self.columns]
        return sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values})").format(
            table=self.table.identifier,
            columns=sql.SQL(", ").join(sql.Identifier(name) for name in names),
            values=sql.SQL(", ").join(sql.Placeholder() for _ in names),
        )

    def row_params(self, partition_key: str, rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
        """The bind parameters of ``insert_row`` for every row (JSON columns wrapped as jsonb)."""
        return [
            [
                partition_key,
                number,
                *(
                    Jsonb(row.get(column))
                    if isinstance(row.get(column), dict | list)
                    else row.get(column)
                    for column in self.columns
                ),
            ]
            for number, row in enumerate(rows)
        ]

    @staticmethod
    def canonical_body(rows: Sequence[dict[str, Any]]) -> bytes:
        """The rows as canonical JSON, the basis of the recorded size and content hash."""
        return json.dumps(rows, sort_keys=True, ensure_ascii=False, default=_hash_default).encode()


def select_slice(table: QualifiedName, partition_column: str) -> sql.Composed:
    """The rows of one partition in stored order (param: partition key)."""
    return sql.SQL("SELECT * FROM {table} WHERE {column} = %s ORDER BY {order}").format(
        table=table.identifier,
        column=sql.Identifier(partition_column),
        order=sql.Identifier(ROW_NUMBER_COLUMN),
    )
