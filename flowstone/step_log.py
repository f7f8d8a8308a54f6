"""The log an attempt keeps: what its asset logged through ``context.log``, bounded in size.

A worker's own logging goes wherever the process's logging config sends it; this copy is kept
with the attempt (``StepAttempt.log``) so the admin, the API and ``manage.py runs show`` can
show what the asset said while it ran, next to the error it raised. The first
``STEP_LOG_MAX_CHARS`` characters of records are kept; records past that are counted, not kept.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import traceback
from typing import Any, Final

from flowstone.conf import flowstone_settings
from flowstone.errors import DefinitionError

MAX_RECORD_TEXT: Final = 8_000
RECORD_OVERHEAD: Final = 48  # the time and level of a record, roughly, in characters


def _text(level: int, msg: object, args: tuple[Any, ...], exc_info: Any) -> str:
    """The record's message as ``logging`` formats it, with its exception's traceback."""
    record = logging.LogRecord("flowstone.asset", level, "", 0, msg, args, None)
    try:
        text = record.getMessage()
    except Exception:  # noqa: BLE001  # a bad format string must not fail the step
        text = f"{msg!r} % {args!r}"
    if exc_info:
        error = exc_info if isinstance(exc_info, BaseException) else None
        if error is None and isinstance(exc_info, tuple) and len(exc_info) == 3:  # noqa: PLR2004
            error = exc_info[1]
        if error is None:
            error = sys.exc_info()[1]  # ``exc_info=True``: the exception being handled
        if error is not None:
            text += "\n" + "".join(traceback.format_exception(error)).rstrip()
    text = text.replace("\x00", "\\x00")  # PostgreSQL's JSON cannot hold NUL
    if len(text) > MAX_RECORD_TEXT:
        text = text[:MAX_RECORD_TEXT] + f"... [{len(text) - MAX_RECORD_TEXT} characters cut]"
    return text


def parse_level(value: object) -> int:
    """A logging level from ``STEP_LOG_LEVEL``: a number, or a level name in any case."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        level = logging.getLevelNamesMapping().get(value.strip().upper())
        if level is not None:
            return level
    raise DefinitionError(
        f"STEP_LOG_LEVEL must be a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL or a "
        f"number), not {value!r}"
    )


def parse_max_chars(value: object) -> int:
    """``STEP_LOG_MAX_CHARS``: an integer of 0 or more (0 keeps no record, only the count)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise DefinitionError(f"STEP_LOG_MAX_CHARS must be an integer of 0 or more, not {value!r}")


class StepLog:
    """The bounded records of one attempt, safe to fill from several threads."""

    def __init__(self, *, max_chars: int | None = None, level: int | str | None = None) -> None:
        self.max_chars = parse_max_chars(
            flowstone_settings.STEP_LOG_MAX_CHARS if max_chars is None else max_chars
        )
        self.level = parse_level(flowstone_settings.STEP_LOG_LEVEL if level is None else level)
        self.records: list[dict[str, str]] = []
        self.dropped = 0
        self._used = 0
        self._lock = threading.Lock()

    def add(self, level: int, msg: object, args: tuple[Any, ...], exc_info: Any = None) -> None:
        """Keep one record if it is at the log's level and fits; else count it as dropped."""
        if level < self.level:
            return
        text = _text(level, msg, args, exc_info)
        with self._lock:
            size = len(text) + RECORD_OVERHEAD
            if self._used + size > self.max_chars:
                self.dropped += 1
                return
            self._used += size
            self.records.append(
                {
                    "at": dt.datetime.now(tz=dt.UTC).isoformat(timespec="milliseconds"),
                    "level": logging.getLevelName(level),
                    "message": text,
                }
            )

    def __bool__(self) -> bool:
        return bool(self.records or self.dropped)
