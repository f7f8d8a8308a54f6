"""CPU time and resident memory of a process tree, read from ``/proc`` (Linux).

psutil is not a dependency of the project, so the harness reads ``/proc/<pid>/stat`` itself:
user + system time of the root and its live descendants plus the root's reaped children
(``cutime``/``cstime``), and the summed resident set of the tree, sampled by a thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Final

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS: Final = 0.2
# Fields of /proc/<pid>/stat after the ")" that closes the command name (0-based there).
PPID_FIELD: Final = 1
UTIME_FIELD: Final = 11
CUTIME_FIELD: Final = 13


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[PPID_FIELD]), []).append(int(entry.name))
    found = [root]
    for pid in found:
        found.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of the tree so far (including reaped children of the root)."""
    ticks = 0
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        ticks += int(fields[UTIME_FIELD]) + int(fields[UTIME_FIELD + 1])
        if pid == root:
            ticks += int(fields[CUTIME_FIELD]) + int(fields[CUTIME_FIELD + 1])
    return ticks / CLOCK_TICKS


def rss_bytes(root: int) -> int:
    """The summed resident set size of the tree now."""
    total = 0
    for pid in descendants(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue
    return total


class PeakSampler:
    """Samples a tree's RSS every 0.2 s in a thread; ``peak`` is the largest sum seen."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = rss_bytes(root)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, rss_bytes(self.root))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.root))


SERVICE_COMMANDS: Final = frozenset({"postgres", "redis-server"})
BUSY_FIELDS: Final = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal in /proc/stat


def system_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from ``/proc/stat``."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in BUSY_FIELDS) / CLOCK_TICKS


def services_cpu_seconds() -> float:
    """CPU seconds of every PostgreSQL and Redis process, with the backends they reaped."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if command not in SERVICE_COMMANDS:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            ticks += sum(int(fields[UTIME_FIELD + i]) for i in range(4))
    return ticks / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
