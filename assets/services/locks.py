"""Transaction-scoped locks that serialize dispatch decisions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import connection

if TYPE_CHECKING:
    from collections.abc import Iterable


def lock_assets(assets: Iterable[str]) -> None:
    """Take PostgreSQL advisory locks for per-asset limits, in name order so no two deadlock.

    SQLite runs one writing transaction at a time, so there is nothing to lock there.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for asset in sorted(set(assets)):
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"flowstone:asset:{asset}"]
            )
