from __future__ import annotations

from flowstone import asset


@asset
def chicken(egg: int) -> int:
    return egg


@asset
def egg(chicken: int) -> int:
    return chicken
