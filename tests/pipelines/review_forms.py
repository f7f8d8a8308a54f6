"""A checkpoint with a typed review form and named options, for the review-form tests.

``rf_invoice`` feeds two branches: the checkpointed ``rf_payment`` (then ``rf_ledger``) and
``rf_archive``; ``rf_report`` reads both. Skipping the payment skips the ledger and the report,
while the archive still runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from flowstone import AssetContext, asset
from flowstone.checkpoints import Option, checkpoint

PAYMENT_FORM = {
    "type": "object",
    "properties": {
        "amount": {"type": "number", "minimum": 0},
        "note": {"type": "string", "maxLength": 200},
        "currency": {"enum": ["EUR", "USD"]},
        "urgent": {"type": "boolean"},
        "lines": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["amount"],
}
PAYMENT_OPTIONS = (
    Option("pay", "Pay now", outcome="continue"),
    Option("hold", "Hold until next week", outcome="skip"),
    Option("block", "Block the payee", outcome="fail"),
)


def log(event: str, **extra: Any) -> None:
    """Append an event line, visible across processes (worker tests read it)."""
    path = Path(os.environ.get("FLOWSTONE_DATA_DIR", "var")) / "review_forms.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": event, "at": time.time(), **extra}) + "\n")


@asset
def rf_invoice() -> dict[str, Any]:
    return {"amount": 120.5, "currency": "EUR", "note": "March", "lines": [1, 2]}


@checkpoint(
    message=lambda review: f"Pay {review.value['amount']} {review.value['currency']}?",
    form=PAYMENT_FORM,
    options=PAYMENT_OPTIONS,
)
@asset
def rf_payment(rf_invoice: dict[str, Any]) -> dict[str, Any]:
    log("rf_payment")
    return dict(rf_invoice)


@asset
def rf_ledger(context: AssetContext, rf_payment: dict[str, Any]) -> dict[str, Any]:
    log("rf_ledger", run_id=context.run_id, value=rf_payment)
    return {"booked": rf_payment["amount"]}


@asset
def rf_archive(context: AssetContext, rf_invoice: dict[str, Any]) -> str:
    log("rf_archive", run_id=context.run_id)
    return f"archived {rf_invoice['amount']}"


@asset
def rf_report(rf_ledger: dict[str, Any], rf_archive: str) -> str:
    log("rf_report")
    return f"{rf_ledger['booked']} / {rf_archive}"


def _logged_check(review: Any, value: Any) -> Any:  # a validator's signature
    """A validator that leaves a trace: the tests see whether it ran."""
    log("rf_validated", value=value)
    return value


@checkpoint(
    form=PAYMENT_FORM,
    options=PAYMENT_OPTIONS,
    quorum=2,
    validate_modification=_logged_check,
)
@asset
def rf_quorum_payment(rf_invoice: dict[str, Any]) -> dict[str, Any]:
    return dict(rf_invoice)
