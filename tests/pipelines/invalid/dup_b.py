from __future__ import annotations

from flowstone import asset


@asset(name="thing")
def other_thing() -> int:
    return 2
