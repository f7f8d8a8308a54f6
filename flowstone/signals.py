"""Lifecycle signals, sent after the transaction that caused them commits.

========================  ===========================  =========================================
signal                    event name                   keyword arguments
========================  ===========================  =========================================
``run_started``           ``flowstone.run.start``      ``run_id``
``run_finished``          ``flowstone.run.stop``       ``run_id``, ``status``
``step_started``          ``flowstone.materialization  ``run_id``, ``asset``, ``partition``,
                          .start``                     ``materialization_id``, ``attempt``
``step_succeeded``        ``flowstone.materialization  the same, plus ``duration`` (seconds)
                          .stop``
``step_failed``           ``flowstone.materialization  the same, plus ``error`` (its JSON form)
                          .exception``
========================  ===========================  =========================================

Approval signals live in ``approvals.signals``. Every signal is sent with ``sender`` set to the
event name, so receivers can tell them apart when connected to several.
"""

from __future__ import annotations

from typing import Any, Final

from django.db import transaction
from django.dispatch import Signal

run_started = Signal()
run_finished = Signal()
step_started = Signal()
step_succeeded = Signal()
step_failed = Signal()

EVENT_NAMES: Final = {
    "run_started": "flowstone.run.start",
    "run_finished": "flowstone.run.stop",
    "step_started": "flowstone.materialization.start",
    "step_succeeded": "flowstone.materialization.stop",
    "step_failed": "flowstone.materialization.exception",
}
_SIGNALS: Final = {
    "run_started": run_started,
    "run_finished": run_finished,
    "step_started": step_started,
    "step_succeeded": step_succeeded,
    "step_failed": step_failed,
}


def send_after_commit(name: str, **payload: Any) -> None:
    """Send the named lifecycle signal once the current transaction commits (now, if none)."""
    signal = _SIGNALS[name]
    event = EVENT_NAMES[name]
    transaction.on_commit(lambda: signal.send_robust(sender=event, event=event, **payload))
