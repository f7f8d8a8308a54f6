"""The PostgreSQL IO manager: asset values in tables, every name checked and quoted by psycopg.

By default an asset partition's value is one ``jsonb`` row of FlowStone's own table
(``flowstone_stored_value``, keyed by asset and partition key). With
``io_options={"table": "schema.table"}`` an asset's rows (a list of dicts, a pyarrow Table or a
pandas DataFrame) go into typed columns of that table instead, one slice per partition key in
``partition_column``; FlowStone's table then records where the slice is and how many rows it has.

FlowStone creates the tables it needs (``CREATE TABLE IF NOT EXISTS``; a missing rows table is
typed from the first rows), so there is nothing to migrate by hand. Every store is one transaction:
upsert the entry, then delete the slice and insert the rows. The entry's row lock serializes
concurrent stores of one partition, so re-running a step replaces its rows and never duplicates
them. It uses Django's connection ``database`` (default ``"default"``), or its own connection when
``dsn`` is given.

Fencing (ADR 0023): a partition has one location here, so instead of versioning it, a step
attempt's store holds the attempt's lease (``IOTarget.fence``) in the same transaction as its
writes: an attempt that lost its lease rolls back without writing, and the step row stays locked
until the value is committed. That needs the values in the database the steps live in (Django's
``default``); with ``dsn`` or another database there is nothing to hold, which
``flowstone.W004`` reports.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db import Error as DjangoDatabaseError
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError
from psycopg.types.string import TextLoader

from flowstone.errors import DefinitionError, IOManagerError
from flowstone.io.base import (
    IOTarget,
    StoredOutput,
    decode_json,
    describe_output,
    encode_json,
    invalid_options_error,
    unknown_option_problems,
)
from flowstone.io.postgres_tables import (
    JSON_TYPE_OIDS,
    LOCK_FOR_CREATE,
    RELATION_EXISTS,
    ROW_NUMBER_COLUMN,
    VERSION_COLUMN_EXISTS,
    RowLayout,
    add_version_column,
    create_store_table,
    delete_entry,
    select_entry,
    select_slice,
    upsert_entry,
)
from flowstone.io.sql_names import QualifiedName, identifier_problem, table_name_problem
from flowstone.io.tabular import to_rows

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from psycopg import sql

DEFAULT_DATABASE_ALIAS: Final = "default"
DEFAULT_STORE_TABLE: Final = "flowstone_stored_value"
DEFAULT_PARTITION_COLUMN: Final = "partition_key"
ASSET_OPTIONS: Final = frozenset({"table", "partition_column"})
TRANSIENT_ERRORS: Final = (
    DjangoOperationalError,
    DjangoInterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)

__all__ = ["DEFAULT_STORE_TABLE", "PostgresAssetOptions", "PostgresIOManager"]


class _Cursor(Protocol):
    """What the manager needs of a cursor: Django's wrapper and psycopg's both provide it."""

    @property
    def description(self) -> Any: ...

    def execute(
        self, query: sql.SQL | sql.Composed, params: Sequence[Any] | None = None
    ) -> Any: ...

    def executemany(
        self, query: sql.SQL | sql.Composed, params_seq: Sequence[Sequence[Any]]
    ) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class PostgresAssetOptions:
    """An asset's checked ``io_options``: a rows table (``None``: JSON) and its partition column."""

    table: QualifiedName | None = None
    partition_column: str = DEFAULT_PARTITION_COLUMN

    @staticmethod
    def problems(options: Mapping[str, Any]) -> list[str]:
        """Every reason ``options`` are invalid; names are checked without touching a database."""
        problems = unknown_option_problems(options, ASSET_OPTIONS)
        if "table" in options:
            problem = table_name_problem(options["table"])
            problems += [problem] if problem else []
        if "partition_column" in options:
            problem = identifier_problem(options["partition_column"], what="partition_column")
            if problem is None and options["partition_column"] == ROW_NUMBER_COLUMN:
                problem = f"partition_column must not be {ROW_NUMBER_COLUMN!r} (the row order)"
            problems += [problem] if problem else []
        if "partition_column" in options and "table" not in options:
            problems.append("partition_column only applies together with table")
        return problems

    @classmethod
    def parse(cls, target: IOTarget) -> PostgresAssetOptions:
        """Check ``target.options`` and return them; invalid options raise before any SQL."""
        problems = cls.problems(target.options)
        if problems:
            raise invalid_options_error(target, problems)
        table = target.options.get("table")
        return cls(
            table=None if table is None else QualifiedName.parse(table),
            partition_column=target.options.get("partition_column", DEFAULT_PARTITION_COLUMN),
        )


def _load_json_as_text(cursor: Any) -> None:
    """Fetch json/jsonb as text on this cursor, as Django does, and decode it here."""
    for type_name in ("json", "jsonb"):
        cursor.adapters.register_loader(type_name, TextLoader)


class PostgresIOManager:
    """Stores asset values in PostgreSQL: JSON in FlowStone's table, or rows in a named table.

    Options: ``database`` (a Django database alias), ``dsn`` (a libpq connection string used
    instead of Django's connection) and ``table`` (FlowStone's table, ``table`` or
    ``schema.table``). Per-asset ``io_options``: ``table`` and ``partition_column``.
    """

    def __init__(
        self,
        *,
        database: str = DEFAULT_DATABASE_ALIAS,
        dsn: str | None = None,
        table: str = DEFAULT_STORE_TABLE,
    ) -> None:
        problem = table_name_problem(table)
        if problem is not None:
            raise DefinitionError(problem)
        if dsn is None:
            if database not in connections.settings:
                raise DefinitionError(f"database {database!r} is not in settings.DATABASES")
            vendor = connections[database].vendor
            if vendor != "postgresql":
                raise DefinitionError(f"database {database!r} is {vendor}, not PostgreSQL")
        self.database = database
        self.dsn = dsn
        self.table = QualifiedName.parse(table)
        self._has_version_column = False

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        """Check an asset's ``io_options`` (``flowstone.E009``)."""
        return PostgresAssetOptions.problems(options)

    def _server(self) -> str:
        """``postgresql://host:port/dbname`` of the database written to (no credentials)."""
        if self.dsn is not None:
            params = psycopg.conninfo.conninfo_to_dict(self.dsn)
            host, port, name = params.get("host"), params.get("port"), params.get("dbname")
        else:
            settings = connections[self.database].settings_dict
            host, port, name = settings["HOST"], settings["PORT"], settings["NAME"]
        netloc = f"{host or 'localhost'}:{port}" if port else str(host or "localhost")
        return f"postgresql://{netloc}/{name or ''}"

    def _uri(self, target: IOTarget, table: QualifiedName) -> str:
        return (
            f"{self._server()}/{table}?asset={quote(target.asset)}"
            f"&partition_key={quote(target.partition_key, safe='')}"
        )

    @contextmanager
    def _transaction(self, target: IOTarget, action: str) -> Iterator[_Cursor]:
        """One transaction (a savepoint inside Django's) whose database errors become IO errors."""
        try:
            if self.dsn is not None:
                with (
                    psycopg.connect(self.dsn, autocommit=True) as connection,
                    connection.transaction(),
                    connection.cursor() as cursor,
                ):
                    _load_json_as_text(cursor)
                    yield cursor
            else:
                with (
                    transaction.atomic(using=self.database),
                    connections[self.database].cursor() as cursor,
                ):
                    _load_json_as_text(cursor.cursor)
                    yield cursor
        except (DjangoDatabaseError, psycopg.Error) as exc:
            raise IOManagerError(
                f"could not {action} asset {target.asset!r} in PostgreSQL: {exc}",
                asset=target.asset,
                partition=target.partition_key,
                retryable=isinstance(exc, TRANSIENT_ERRORS),
            ) from exc

    @staticmethod
    def _exists(cursor: _Cursor, table: QualifiedName) -> bool:
        cursor.execute(RELATION_EXISTS, [table.schema, table.table])
        return bool(cursor.fetchone()[0])

    def _create_if_missing(self, cursor: _Cursor, table: QualifiedName, ddl: sql.Composed) -> None:
        if not self._exists(cursor, table):
            cursor.execute(LOCK_FOR_CREATE, [str(table)])
            cursor.execute(ddl)

    def _prepare_store_table(self, cursor: _Cursor) -> None:
        """Create FlowStone's table, or give one from before versions its ``version`` column.

        The column is looked for once per manager (a catalog query), and added only if missing.
        """
        self._create_if_missing(cursor, self.table, create_store_table(self.table))
        self._upgrade_store_table(cursor)

    def _upgrade_store_table(self, cursor: _Cursor) -> None:
        """Give an existing store table from before versions its ``version`` column (once)."""
        if self._has_version_column:
            return
        cursor.execute(VERSION_COLUMN_EXISTS, [self.table.schema, self.table.table])
        if not cursor.fetchone()[0]:
            cursor.execute(LOCK_FOR_CREATE, [str(self.table)])
            cursor.execute(add_version_column(self.table))
        self._has_version_column = True

    def _missing(self, target: IOTarget) -> IOManagerError:
        return IOManagerError(
            f"no stored value for asset {target.asset!r} partition {target.partition_key!r} "
            f"in {self.table}",
            asset=target.asset,
            partition=target.partition_key,
            retryable=False,
        )

    def _replaced(self, target: IOTarget, version: str) -> IOManagerError:
        """The partition holds another attempt's value than the one the reader's success names."""
        return IOManagerError(
            f"asset {target.asset!r} partition {target.partition_key!r} in {self.table} holds "
            f"the value of attempt {version or '(unversioned)'}, not of the recorded attempt "
            f"{target.version}: a later store replaced it (this manager keeps one value per "
            "partition)",
            asset=target.asset,
            partition=target.partition_key,
            retryable=False,
        )

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Store the value in one transaction, replacing what the partition held before."""
        options = PostgresAssetOptions.parse(target)
        if options.table is None:
            return self._store_json(target, value)
        return self._store_rows(target, value, options.table, options.partition_column)

    def _store_json(self, target: IOTarget, value: Any) -> StoredOutput:
        body = encode_json(target, value)
        stored = describe_output(self._uri(target, self.table), value, body)
        entry = [body.decode(), None, None, stored.row_count, len(body), stored.content_hash]
        with self._transaction(target, "store") as cursor:
            self._prepare_store_table(cursor)
            cursor.execute(
                upsert_entry(self.table),
                [target.asset, target.partition_key, *entry, target.version],
            )
            self._hold_fence(target)
        return stored

    def can_fence(self) -> bool:
        """Whether a store can hold a step's lease: in the steps' database, not over ``dsn``."""
        return self.dsn is None and self.database == DEFAULT_DB_ALIAS

    def _hold_fence(self, target: IOTarget) -> None:
        """The last statement of a store: refuse the write if the storing attempt lost its step.

        ``LeaseLostError`` rolls the transaction back; otherwise the step row stays locked (and
        its lease renewed) until the value commits, so the sweeper cannot take it back between.
        """
        if target.fence is not None and self.can_fence() and not target.fence.hold(self.database):
            raise IOManagerError(
                f"could not hold the lease of the attempt storing asset {target.asset!r}: "
                f"database {self.database!r} is not the one the steps live in",
                asset=target.asset,
                partition=target.partition_key,
                retryable=False,
            )

    def _store_rows(
        self, target: IOTarget, value: Any, table: QualifiedName, partition_column: str
    ) -> StoredOutput:
        rows = to_rows(target, value)
        layout = RowLayout.of(target, rows, table=table, partition_column=partition_column)
        params = layout.row_params(target.partition_key, rows)
        body = layout.canonical_body(rows)
        stored = describe_output(self._uri(target, table), rows, body)
        entry = [None, str(table), partition_column, len(rows), len(body), stored.content_hash]
        with self._transaction(target, "store") as cursor:
            self._prepare_store_table(cursor)
            # The entry first: its row lock makes a concurrent store of this partition wait.
            cursor.execute(
                upsert_entry(self.table),
                [target.asset, target.partition_key, *entry, target.version],
            )
            exists = self._exists(cursor, table)
            if exists or rows:  # no rows and no table: the entry says "0 rows"
                if not exists:
                    cursor.execute(LOCK_FOR_CREATE, [str(table)])
                    cursor.execute(layout.create_table(rows))
                cursor.execute(layout.delete_slice(), [target.partition_key])
                if params:
                    cursor.executemany(layout.insert_row(), params)
            self._hold_fence(target)
        return stored

    def _rows_location(
        self, target: IOTarget, table: str, column: str
    ) -> tuple[QualifiedName, str]:
        """Re-check the recorded rows table and column: rows read from the database are data."""
        problem = table_name_problem(table) or identifier_problem(column, what="partition_column")
        if problem is not None:
            raise IOManagerError(
                f"the entry of asset {target.asset!r} in {self.table} is corrupt: {problem}",
                asset=target.asset,
                partition=target.partition_key,
                retryable=False,
            )
        return QualifiedName.parse(table), column

    def load(self, target: IOTarget) -> Any:
        """Return the stored JSON value, or the slice's rows (list of dicts) in stored order."""
        PostgresAssetOptions.parse(target)
        with self._transaction(target, "load") as cursor:
            entry = None
            if self._exists(cursor, self.table):
                self._upgrade_store_table(cursor)
                cursor.execute(select_entry(self.table), [target.asset, target.partition_key])
                entry = cursor.fetchone()
            if entry is None:
                raise self._missing(target)
            value_text, rows_table, partition_column, row_count, version = entry
            if target.version and version != target.version:
                raise self._replaced(target, version)
            if rows_table is None:
                return decode_json(target, str(value_text).encode())
            table, column = self._rows_location(target, rows_table, partition_column)
            if row_count == 0 and not self._exists(cursor, table):
                return []
            cursor.execute(select_slice(table, column), [target.partition_key])
            names = [(c.name, c.type_code in JSON_TYPE_OIDS) for c in cursor.description]
            fetched = cursor.fetchall()
        hidden = {column, ROW_NUMBER_COLUMN}
        return [
            {
                name: (json.loads(cell) if is_json and cell is not None else cell)
                for (name, is_json), cell in zip(names, row, strict=True)
                if name not in hidden
            }
            for row in fetched
        ]

    def exists(self, target: IOTarget) -> bool:
        """Whether a value (or a slice, possibly of zero rows) is stored for the partition."""
        PostgresAssetOptions.parse(target)
        with self._transaction(target, "check") as cursor:
            if not self._exists(cursor, self.table):
                return False
            self._upgrade_store_table(cursor)
            cursor.execute(select_entry(self.table), [target.asset, target.partition_key])
            return cursor.fetchone() is not None

    def delete(self, target: IOTarget) -> None:
        """Delete the partition's entry and its rows, if any, in one transaction."""
        PostgresAssetOptions.parse(target)
        with self._transaction(target, "delete") as cursor:
            if not self._exists(cursor, self.table):
                return
            self._upgrade_store_table(cursor)
            key = [target.asset, target.partition_key]
            cursor.execute(select_entry(self.table, for_update=True), key)
            entry = cursor.fetchone()
            if entry is None:
                return
            if entry[1] is not None:
                table, column = self._rows_location(target, entry[1], entry[2])
                if self._exists(cursor, table):
                    layout = RowLayout(table=table, partition_column=column, columns=())
                    cursor.execute(layout.delete_slice(), [target.partition_key])
            cursor.execute(delete_entry(self.table), key)
