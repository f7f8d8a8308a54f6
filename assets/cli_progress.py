"""Progress on stderr for every long wait of the commands, and the one loop that follows a run.

On a terminal the progress is a live ``tqdm`` bar with an ETA; otherwise (a pipe, a log file) it
is a plain line when the run's status changes, at most every ``PLAIN_LINE_SECONDS`` while steps
end, and once at the end, so logs stay readable.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, Never

from tqdm import tqdm

from assets import services
from flowstone.status import TERMINAL_RUN_STATUSES, RunStatus

if TYPE_CHECKING:
    from django.core.management.base import OutputWrapper

    from flowstone.execution.step import StepOutcome

PLAIN_LINE_SECONDS: Final = 5.0
"""The least time between two plain progress lines while only the step count changes."""
FIRST_POLL_SECONDS: Final = 0.02
MAX_POLL_SECONDS: Final = 0.5
"""A wait re-reads the run's row with a growing interval, from 20 ms up to 500 ms."""
WAIT_ENDS_AT: Final = TERMINAL_RUN_STATUSES | {RunStatus.WAITING_APPROVAL}
"""A wait ends when the run ends, or when no step can go on without a human decision."""


class _Stream:
    """Django's ``OutputWrapper`` as the file tqdm writes to (no newline added to each write)."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self._wrapper = wrapper

    def write(self, text: str) -> None:
        self._wrapper.write(text, ending="")

    def flush(self) -> None:
        self._wrapper.flush()


class RunProgress:
    """How far a run has got, shown on ``stream`` (nothing at all when not ``enabled``)."""

    def __init__(self, stream: OutputWrapper, *, label: str, enabled: bool) -> None:
        self._stream = stream
        self._label = label
        self._enabled = enabled
        self._is_tty = enabled and stream.isatty()
        self._bar: tqdm[Never] | None = None
        self._shown: tuple[int, int, str] | None = None
        self._shown_at = 0.0
        self._last: tuple[int, int, str] | None = None

    def update(self, ended: int, total: int, status: str) -> None:
        """Show that ``ended`` of ``total`` steps have ended and the run is ``status``."""
        if not self._enabled:
            return
        self._last = (ended, total, status)
        if self._is_tty:
            bar = self._bar
            if bar is None:
                bar = self._bar = tqdm(
                    desc=self._label, unit="step", file=_Stream(self._stream), dynamic_ncols=True
                )
            bar.total = total
            bar.n = ended
            bar.set_postfix_str(status, refresh=False)
            bar.refresh()
            return
        status_changed = self._shown is None or self._shown[2] != status
        if status_changed or time.monotonic() - self._shown_at >= PLAIN_LINE_SECONDS:
            self._line()

    def step_ended(self, outcome: StepOutcome, ended: int, total: int) -> None:
        """The in-process runner's progress callback (``flowstone.execution.inprocess``)."""
        del outcome
        self.update(ended, total, str(RunStatus.RUNNING))

    def close(self, status: str | None = None) -> None:
        """Show the final count (with the run's final ``status``) and end the bar."""
        if self._last is not None and status is not None:
            self._last = (self._last[0], self._last[1], status)
        if self._bar is not None:
            if self._last is not None:
                self._bar.set_postfix_str(self._last[2], refresh=True)
            self._bar.close()
            self._bar = None
        elif self._enabled and self._last is not None and self._last != self._shown:
            self._line()

    def _line(self) -> None:
        if self._last is None:
            return
        ended, total, status = self._last
        self._stream.write(f"{self._label}: {ended}/{total} steps ended ({status})")
        self._shown = self._last
        self._shown_at = time.monotonic()


def follow_run(run_id: str, progress: RunProgress, *, timeout: float | None = None) -> RunStatus:
    """Follow a workers' run until it ends or waits for approval; return its status then.

    With ``timeout`` (seconds), return the status it has when the time is up (the run goes on).
    The command reads the run's counters, which the engine keeps in the same UPDATE as each step's
    status, so one indexed row read per interval is all a wait costs.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = FIRST_POLL_SECONDS
    while True:
        run = services.get_run(run_id)
        status = RunStatus(run.status)
        progress.update(run.steps_total - run.steps_remaining, run.steps_total, status)
        if status in WAIT_ENDS_AT:
            progress.close(status)
            return status
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            progress.close(status)
            return status
        time.sleep(interval if remaining is None else min(interval, remaining))
        interval = min(interval * 2, MAX_POLL_SECONDS)
