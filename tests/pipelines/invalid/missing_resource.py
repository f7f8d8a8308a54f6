from __future__ import annotations

from flowstone import asset


@asset(resources=["warehouse"])
def needs_warehouse() -> int:
    return 1
