from __future__ import annotations

from flowstone import asset


@asset
def orphan(missing_upstream: int) -> int:
    return missing_upstream
