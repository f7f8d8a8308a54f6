"""A checkpoint whose review form is not a valid JSON Schema (``manage.py check`` reports it)."""

from __future__ import annotations

from flowstone import asset
from flowstone.checkpoints import checkpoint


@checkpoint(form={"type": "object", "properties": {"amount": {"type": "money"}}})
@asset
def badly_formed() -> dict[str, int]:
    return {"amount": 1}
