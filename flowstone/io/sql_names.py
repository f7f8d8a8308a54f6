"""SQL identifiers for the PostgreSQL IO manager: validated first, then quoted by psycopg.

A name taken from settings, ``io_options`` or a row's keys reaches SQL only as a
``psycopg.sql.Identifier`` built from a ``QualifiedName`` or a checked column name. The checks
here run before any connection is opened, so a hostile name never gets near the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from psycopg import sql

from flowstone.errors import DefinitionError

IDENTIFIER_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which could silently merge two names.
MAX_IDENTIFIER_LENGTH: Final = 63
MAX_NAME_PARTS: Final = 2  # schema.table
NAME_RULE: Final = (
    "each part must start with a letter or underscore, contain only letters, digits and "
    f"underscores, and be at most {MAX_IDENTIFIER_LENGTH} characters"
)

__all__ = [
    "IDENTIFIER_PATTERN",
    "MAX_IDENTIFIER_LENGTH",
    "QualifiedName",
    "identifier_problem",
    "table_name_problem",
]


def identifier_problem(value: object, *, what: str) -> str | None:
    """Why ``value`` cannot be used as one SQL identifier, or ``None`` if it can."""
    if not isinstance(value, str):
        return f"{what} must be a string, not {type(value).__name__}"
    if value == "":
        return f"{what} must not be empty"
    if len(value) > MAX_IDENTIFIER_LENGTH:
        return (
            f"{what} {value[:80]!r} is {len(value)} characters long; "
            f"PostgreSQL names are at most {MAX_IDENTIFIER_LENGTH}"
        )
    if not IDENTIFIER_PATTERN.match(value):
        return f"{what} {value!r} is not a valid name: {NAME_RULE}"
    return None


def table_name_problem(value: object, *, what: str = "table") -> str | None:
    """Why ``value`` is not a ``table`` or ``schema.table`` name, or ``None`` if it is one."""
    if not isinstance(value, str) or value == "":
        return identifier_problem(value, what=what)
    shown = repr(value[:80])
    parts = value.split(".")
    if len(parts) > MAX_NAME_PARTS:
        return f"{what} {shown} has {len(parts)} dot-separated parts; use 'table' or 'schema.table'"
    if "" in parts:
        return f"{what} {shown} has an empty part; use 'table' or 'schema.table'"
    longest = max(len(part) for part in parts)
    if longest > MAX_IDENTIFIER_LENGTH:
        return (
            f"{what} {shown} has a part of {longest} characters; "
            f"PostgreSQL names are at most {MAX_IDENTIFIER_LENGTH}"
        )
    if not all(IDENTIFIER_PATTERN.match(part) for part in parts):
        return f"{what} {shown} is not a valid name: {NAME_RULE}"
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class QualifiedName:
    """A checked ``table`` or ``schema.table`` name; ``schema=None`` means the search path."""

    schema: str | None
    table: str

    def __post_init__(self) -> None:
        parts = [("table", self.table)] + ([] if self.schema is None else [("schema", self.schema)])
        for what, part in parts:
            problem = identifier_problem(part, what=what)
            if problem is not None:
                raise DefinitionError(problem)

    @classmethod
    def parse(cls, value: str) -> QualifiedName:
        """Split a name that ``table_name_problem`` accepted into schema and table."""
        problem = table_name_problem(value)
        if problem is not None:
            raise DefinitionError(problem)
        schema, _, table = value.rpartition(".")
        return cls(schema=schema or None, table=table)

    @property
    def identifier(self) -> sql.Identifier:
        """The name as a quoted psycopg identifier (``"schema"."table"``)."""
        if self.schema is None:
            return sql.Identifier(self.table)
        return sql.Identifier(self.schema, self.table)

    def __str__(self) -> str:
        return self.table if self.schema is None else f"{self.schema}.{self.table}"
