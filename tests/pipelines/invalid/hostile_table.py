from __future__ import annotations

from flowstone import asset


@asset(io_manager="warehouse", io_options={"table": 'a"; DROP TABLE x;--'})
def hostile_rows() -> list[dict[str, int]]:
    return [{"id": 1}]
