"""Benchmark-only probes that run inside worker processes and report to files.

- ``Counters``: cumulative counts (SQL statements, connections opened, tasks) per process,
  written to ``$BENCH_PROBE_DIR/counts-<pid>.json`` by a flusher thread every 0.2 s.
- ``EventLog``: per-task timing records appended to ``$BENCH_PROBE_DIR/events-<pid>.jsonl``.
- ``mark_ready``: writes ``$BENCH_PROBE_DIR/ready-<name>`` when a worker is ready, so the
  harness can run workers at log level WARNING (no per-task log lines) and still know.

Each pool process gets its own files (the pid is checked on every call, so a forked child
starts fresh). The harness sums the files and takes differences before and after a workload.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Final

PROBE_DIR_ENV: Final = "BENCH_PROBE_DIR"
FLUSH_SECONDS: Final = 0.2


class _ProcessState:
    """Counts and pending events of the current process, and its flusher thread."""

    def __init__(self, directory: Path) -> None:
        self.pid = os.getpid()
        self.directory = directory
        self.counts: dict[str, int] = {}
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.dirty = False
        thread = threading.Thread(target=self._loop, name="bench-probe-flush", daemon=True)
        thread.start()

    def _loop(self) -> None:
        stop = threading.Event()
        while not stop.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Write the counts (atomically) and append new events."""
        with self.lock:
            if not self.dirty:
                return
            counts = dict(self.counts)
            events, self.events = self.events, []
            self.dirty = False
        if events:
            with (self.directory / f"events-{self.pid}.jsonl").open("a") as handle:
                handle.write("".join(events))
        temp = self.directory / f".counts-{self.pid}.tmp"
        temp.write_text(json.dumps(counts))
        temp.replace(self.directory / f"counts-{self.pid}.json")


_state: _ProcessState | None = None
_state_lock = threading.Lock()


def _current() -> _ProcessState | None:
    global _state  # noqa: PLW0603  # one state per process, replaced after fork
    directory = os.environ.get(PROBE_DIR_ENV)
    if not directory:
        return None
    if _state is None or _state.pid != os.getpid():
        with _state_lock:
            if _state is None or _state.pid != os.getpid():
                _state = _ProcessState(Path(directory))
    return _state


def count(name: str, amount: int = 1) -> None:
    """Add ``amount`` to the counter ``name`` of this process."""
    state = _current()
    if state is None:
        return
    with state.lock:
        state.counts[name] = state.counts.get(name, 0) + amount
        state.dirty = True


def record_event(**fields: Any) -> None:
    """Append one JSON record (e.g. a ceiling task's timestamps) for the harness."""
    state = _current()
    if state is None:
        return
    line = json.dumps(fields) + "\n"
    with state.lock:
        state.events.append(line)
        state.dirty = True


def mark_ready() -> None:
    """Tell the harness that this worker (``$BENCH_WORKER_NAME``) is ready to consume."""
    directory = os.environ.get(PROBE_DIR_ENV)
    if directory:
        name = os.environ.get("BENCH_WORKER_NAME", "worker")
        (Path(directory) / f"ready-{name}").write_text(str(os.getpid()))


def read_counts(directory: Path) -> dict[str, int]:
    """The sum of every process's counters in ``directory``."""
    total: dict[str, int] = {}
    for path in directory.glob("counts-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key, value in data.items():
            total[key] = total.get(key, 0) + int(value)
    return total


def read_events(directory: Path) -> list[dict[str, Any]]:
    """Every complete event record written so far in ``directory``."""
    events: list[dict[str, Any]] = []
    for path in directory.glob("events-*.jsonl"):
        text = path.read_text()
        end = text.rfind("\n")
        events.extend(json.loads(line) for line in text[: end + 1].splitlines() if line)
    return events


def count_events(directory: Path) -> int:
    """How many complete event records were written so far in ``directory`` (cheap to poll)."""
    total = 0
    for path in directory.glob("events-*.jsonl"):
        with path.open("rb") as handle:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))
    return total
