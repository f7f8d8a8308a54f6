"""THE CHECKER: reads the history a fault scenario left behind and says what was lost or doubled.

It reads the database with plain SQL (not through the code under test), the stored output files,
the executions log the assets append to, and the broker's queues. Invariants:

1. Every accepted step ends in exactly one terminal state, the one expected of it (``success``,
   except the steps a scenario poisons on purpose and their downstream).
2. Exactly one ``success`` materialization and one ``asset.materialized`` audit event per
   (asset, partition, run); nothing recorded for a step that did not succeed.
3. Every stored output matches the SHA-256 and size recorded in its metadata.
4. Lineage is complete: every success has exactly one edge per upstream partition it consumed,
   to a successful materialization (the run's own step when the run has one).
5. No lease expired and unclaimed: after quiescence no step anywhere is ``running`` (or waiting
   to run), and every run is terminal with no steps remaining.
6. The broker's queues are drained.
7. Fencing: the value stored at a success's location was computed by the attempt the success
   records, and the upstream values it read are the ones its lineage names (each value carries
   ``attempt`` and ``read``). Each mismatch counts in ``mismatches``.
8. Bounded executions: no attempt ran its body twice (a duplicate delivery must not), and a
   step ran its body more than once only if it was in flight at a fault (``affected``).

*Lost* counts steps that did not end as expected or whose output does not match; *doubled*
counts extra successes or extra user-visible effects. User-visible effects (distinct verified
outputs) are counted apart from executions (lines in the executions log).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import psycopg
import redis

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

TERMINAL: Final = frozenset({"success", "failed", "upstream_failed", "canceled"})
QUEUES: Final = ("flowstone", "later")
MAX_LISTED: Final = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class Expected:
    """The terminal state a step must reach, and a text its error must contain."""

    status: str
    reason: str = ""


@dataclass(kw_only=True)
class Report:
    """What the checker found for one scenario."""

    scenario: str
    steps: int = 0
    requests: int = 0
    effects: int = 0
    executions: int = 0
    lost: int = 0
    doubled: int = 0
    mismatches: int = 0
    reexecutions: int = 0
    stall_seconds: float = 0.0
    queued_messages: int = 0
    unacked_messages: int = 0
    recovery_seconds: float | None = None
    violations: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def violation(self, text: str) -> None:
        """Record one broken invariant."""
        self.violations.append(text)

    def line(self) -> str:
        """The one-line summary each scenario prints."""
        recovery = "n/a" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f}s"
        return (
            f"FAULT scenario={self.scenario} steps={self.steps} lost={self.lost} "
            f"doubled={self.doubled} mismatches={self.mismatches} "
            f"reexecutions={self.reexecutions} "
            f"executions/requests={self.executions}/{self.requests} "
            f"effects={self.effects} recovery={recovery} stall={self.stall_seconds:.1f}s "
            f"violations={len(self.violations)}"
        )


def _path_of(uri: str) -> Path:
    parts = urlsplit(uri)
    return Path(unquote(parts.path))


def _count_executions(
    data_dir: Path, run_ids: Collection[str]
) -> Counter[tuple[str, str, str, int]]:
    """Executions per (run, asset, partition, attempt), from the lines the bodies appended."""
    counts: Counter[tuple[str, str, str, int]] = Counter()
    path = data_dir / "executions.log"
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if "asset" in record and record.get("run_id") in run_ids:
            key = (record["run_id"], record["asset"], record["partition"], int(record["attempt"]))
            counts[key] += 1
    return counts


def _broker_lengths(broker_url: str) -> tuple[int, int]:
    """(messages waiting in the step queues, messages delivered and not acknowledged)."""
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        waiting = 0
        for queue in QUEUES:
            # The queue's list, and kombu's priority lists ("<queue>\x06\x16<n>"); not other
            # queues that share its prefix (flowstone.control holds housekeeping, not steps).
            for key in [queue.encode(), *client.scan_iter(match=f"{queue}\x06\x16*")]:
                if client.type(key) == b"list":
                    waiting += int(client.llen(key))
        unacked = int(client.hlen("unacked"))
    finally:
        client.close()
    return waiting, unacked


def broker_lengths(broker_url: str) -> tuple[int, int]:
    """Public form of the queue probe, for waiting on the drain."""
    return _broker_lengths(broker_url)


class _Check:
    """One pass over the history; fills ``report``."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        report: Report,
        *,
        run_ids: list[str],
        expected: Mapping[tuple[str, str], Expected],
        upstreams: Callable[[str, str], set[tuple[str, str]]],
        data_dir: Path,
    ) -> None:
        self.conn = conn
        self.data_dir = data_dir
        self.report = report
        self.run_ids = run_ids
        self.expected = expected
        self.upstreams = upstreams
        self.values: dict[int, Any] = {}

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    def steps(self) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT id, run_id::text, asset, partition_key, status, metadata, error, finished_at, "
            "attempt FROM assets_materialization WHERE run_id::text = ANY(%s) ORDER BY id",
            self.run_ids,
        )

    def check_states(self, steps: list[tuple[Any, ...]]) -> None:
        report = self.report
        for pk, _, asset, key, status, _, error, finished_at, _ in steps:
            want = self.expected.get((asset, key), Expected(status="success"))
            if status not in TERMINAL or finished_at is None:
                report.lost += 1
                report.violation(f"step {pk} {asset}[{key}] ended {status} (not terminal)")
            elif status != want.status:
                if want.status == "success":
                    report.lost += 1
                report.violation(f"step {pk} {asset}[{key}] ended {status}, expected {want}")
            elif want.reason and want.reason not in json.dumps(error or {}):
                report.violation(f"step {pk} {asset}[{key}] error {error!r} lacks {want.reason!r}")
        successes = Counter(
            (run, asset, key) for _, run, asset, key, s, *_ in steps if s == "success"
        )
        for step_key, count in successes.items():
            if count > 1:
                report.doubled += count - 1
                report.violation(f"{count} successes for {step_key}")

    def check_audit(self, steps: list[tuple[Any, ...]]) -> None:
        report = self.report
        events = Counter(
            int(row[0])
            for row in self.rows(
                "SELECT details->>'materialization_id' FROM lineage_auditevent "
                "WHERE action = 'asset.materialized' AND run_id::text = ANY(%s)",
                self.run_ids,
            )
        )
        for pk, _, asset, key, status, *_ in steps:
            count = events.get(pk, 0)
            if status == "success" and count == 0:
                report.lost += 1
                report.violation(f"success {pk} {asset}[{key}] has no audit event")
            elif status == "success" and count > 1:
                report.doubled += count - 1
                report.violation(f"success {pk} {asset}[{key}] has {count} audit events")
            elif status != "success" and count:
                report.doubled += count
                report.violation(f"{status} step {pk} {asset}[{key}] has {count} audit events")

    def check_outputs(self, steps: list[tuple[Any, ...]]) -> None:
        report = self.report
        for pk, _, asset, key, status, metadata, *_, attempt in steps:
            if status != "success":
                continue
            uri = (metadata or {}).get("uri", "")
            recorded = (metadata or {}).get("content_hash")
            try:
                body = _path_of(uri).read_bytes()
            except OSError as exc:
                report.lost += 1
                report.violation(f"success {pk} {asset}[{key}]: output {uri!r} unreadable: {exc}")
                continue
            actual = "sha256:" + hashlib.sha256(body).hexdigest()
            if actual != recorded or len(body) != (metadata or {}).get("size_bytes"):
                report.lost += 1
                report.violation(f"success {pk} {asset}[{key}]: output hash {actual} != {recorded}")
                continue
            report.effects += 1
            value = json.loads(body)
            self.values[pk] = value
            if value.get("attempt") != attempt:
                report.mismatches += 1
                report.violation(
                    f"success {pk} {asset}[{key}] records attempt {attempt}; its stored value is "
                    f"attempt {value.get('attempt')}'s"
                )

    def check_lineage(self, steps: list[tuple[Any, ...]]) -> None:
        report = self.report
        by_key = {(run, asset, key): pk for pk, run, asset, key, *_ in steps}
        edges: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for row in self.rows(
            "SELECT e.downstream_id, e.upstream_id, e.upstream_asset, e.upstream_partition_key, "
            "u.status, u.attempt FROM lineage_lineageedge e "
            "JOIN assets_materialization d ON d.id = e.downstream_id "
            "JOIN assets_materialization u ON u.id = e.upstream_id "
            "WHERE d.run_id::text = ANY(%s)",
            self.run_ids,
        ):
            edges[int(row[0])].append(row)
        for pk, run, asset, key, status, *_ in steps:
            mine = edges.get(pk, [])
            if status != "success":
                if mine:
                    report.violation(f"{status} step {pk} {asset}[{key}] has lineage edges")
                continue
            consumed = Counter((up_asset, up_key) for _, _, up_asset, up_key, *_ in mine)
            self.check_read(pk, asset, key, mine)
            want = self.upstreams(asset, key)
            if set(consumed) != want or any(n != 1 for n in consumed.values()):
                report.violation(
                    f"lineage of {pk} {asset}[{key}]: {sorted(consumed.items())} != {sorted(want)}"
                )
            for _, upstream_id, up_asset, up_key, up_status, _ in mine:
                if up_status != "success":
                    report.violation(f"{pk} consumed {upstream_id} which is {up_status}")
                in_run = by_key.get((run, up_asset, up_key))
                if in_run is not None and in_run != upstream_id:
                    report.violation(
                        f"{pk} consumed {upstream_id}, not its run's step {in_run} of "
                        f"{up_asset}[{up_key}]"
                    )

    def check_read(self, pk: int, asset: str, key: str, edges: list[tuple[Any, ...]]) -> None:
        """The upstream attempts a value says it read are the ones its lineage records."""
        value = self.values.get(pk)
        if value is None:
            return  # its output was already reported
        recorded = {
            f"{up_asset}[{up_key}]": up_attempt for _, _, up_asset, up_key, _, up_attempt in edges
        }
        if value.get("read") != recorded:
            self.report.mismatches += 1
            self.report.violation(
                f"success {pk} {asset}[{key}] read {value.get('read')}, its lineage says {recorded}"
            )

    def check_executions(self, steps: list[tuple[Any, ...]], affected: Collection[int]) -> None:
        """No attempt ran twice; only steps in flight at a fault ran more than once."""
        report = self.report
        executions = _count_executions(self.data_dir, set(self.run_ids))
        report.executions = sum(executions.values())
        per_step: Counter[tuple[str, str, str]] = Counter()
        for (run, asset, key, attempt), count in executions.items():
            per_step[(run, asset, key)] += count
            if count > 1:
                report.violation(f"attempt {attempt} of {asset}[{key}] ran its body {count} times")
        report.notes["max_executions_of_one_step"] = max(per_step.values(), default=0)
        for pk, run, asset, key, *_ in steps:
            extra = per_step.get((run, asset, key), 0) - 1
            if extra <= 0:
                continue
            report.reexecutions += extra
            if pk not in affected:
                report.violation(
                    f"step {pk} {asset}[{key}] ran {extra + 1} times but was not in flight "
                    "at a fault"
                )

    def longest_stall(self) -> float:
        """The longest time in which no step of the runs ended (seconds, from the database)."""
        rows = self.rows(
            "SELECT extract(epoch FROM finished_at) FROM assets_materialization "
            "WHERE run_id::text = ANY(%s) AND finished_at IS NOT NULL ORDER BY finished_at",
            self.run_ids,
        )
        ends = [float(row[0]) for row in rows]
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)

    def check_quiescence(self) -> None:
        report = self.report
        for pk, asset, key, status, expires in self.rows(
            "SELECT id, asset, partition_key, status, lease_expires_at FROM assets_materialization "
            "WHERE status IN ('pending', 'queued', 'running', 'waiting_approval')"
        ):
            report.violation(f"step {pk} {asset}[{key}] still {status} (lease {expires})")
        for run_id, status, remaining, finished in self.rows(
            "SELECT id::text, status, steps_pending + steps_active + steps_waiting, finished_at "
            "FROM assets_run "
            "WHERE id::text = ANY(%s)",
            self.run_ids,
        ):
            if status not in ("success", "failed", "canceled") or remaining or finished is None:
                report.violation(f"run {run_id} is {status} with {remaining} steps remaining")


def check(
    *,
    scenario: str,
    conninfo: str,
    run_ids: list[str],
    requests: int,
    data_dir: Path,
    broker_url: str,
    expected: Mapping[tuple[str, str], Expected],
    upstreams: Callable[[str, str], set[tuple[str, str]]],
    affected: Collection[int] = (),
) -> Report:
    """Check the history of ``run_ids`` after quiescence (``requests``: steps asked for).

    ``affected``: the steps in flight at a fault, the only ones allowed to run more than once.
    """
    report = Report(scenario=scenario, requests=requests)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        checker = _Check(
            conn,
            report,
            run_ids=run_ids,
            expected=expected,
            upstreams=upstreams,
            data_dir=data_dir,
        )
        steps = checker.steps()
        report.steps = len(steps)
        if len(steps) != requests:
            report.lost += max(requests - len(steps), 0)
            report.violation(f"{len(steps)} steps recorded for {requests} requested")
        checker.check_states(steps)
        checker.check_audit(steps)
        checker.check_outputs(steps)
        checker.check_lineage(steps)
        checker.check_executions(steps, affected)
        checker.check_quiescence()
        report.stall_seconds = checker.longest_stall()
    report.queued_messages, report.unacked_messages = _broker_lengths(broker_url)
    if report.queued_messages:
        report.violation(f"{report.queued_messages} messages left in the step queues")
    return report
