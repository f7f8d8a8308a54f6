"""Structured logging: every record carries ``run_id``, ``asset`` and ``partition``.

``StepFieldsFilter`` fills the three fields with ``None`` where a record has none, so a JSON or
plain format can always name them. ``flowstone/settings.py`` uses python-json-logger's
``JsonFormatter`` when ``FLOWSTONE_LOG_FORMAT=json``.
"""

from __future__ import annotations

import logging
from typing import Final

STEP_FIELDS: Final = ("run_id", "asset", "partition", "event")


class StepFieldsFilter(logging.Filter):
    """Give every record the step fields (``None`` when the code that logged had no step)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the missing fields; never drop a record."""
        for name in STEP_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, None)
        return True
