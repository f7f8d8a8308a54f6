from __future__ import annotations

from flowstone import asset


@asset
def thing() -> int:
    return 1
