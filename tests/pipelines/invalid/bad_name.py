from __future__ import annotations

from flowstone import asset


@asset(name="bad-name")
def fine_function() -> int:
    return 1
