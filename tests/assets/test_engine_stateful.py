"""A stateful property test of the run engine on PostgreSQL.

Hypothesis interleaves claim, succeed, fail, retry, crash + recover, a late completion by a
worker that lost its lease, park for approval, decide, skip (a reviewer's option skips the
branch), cancel and the relay's slot backstop over
three runs that share a concurrency-limited asset: a small DAG (fan-in, a chain, a branch), a
backfill of the limited asset, and a run capped by ``max_parallel``; and over a fourth, a
backfill whose successes a batch counts in a tally (ADR 0034): succeed into the tally, settle
it, lose it with its worker, and the sweeper's recount. After every step:

- each run's stored status is the status derived from its counters, and its counters plus what
  live and lost tallies hold equal the counts of its steps; without such, the status is the one
  derived from its step rows;
- no run is finished while a step of it is unfinished, and a finished run's counters are exact;
- no step has two recorded successes, and the limited asset never has more than its limit of
  steps queued or running;
- no step downstream of a skipped step is released or succeeds;

and once the events are drained, no step is left non-terminal.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
from django.db import transaction
from django.db.models import Count
from django.test import TestCase
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from approvals import services as approval_services
from approvals.models import Approval
from assets import services
from assets.models import Materialization, Run, StepEdge
from flowstone.errors import ExecutionError
from flowstone.io.base import StoredOutput
from flowstone.registry import get_registry
from flowstone.status import (
    TERMINAL_STEP_STATUSES,
    RunKind,
    StepCount,
    StepStatus,
    count_steps,
    derive_run_status,
    run_status,
)
from lineage.models import AuditEvent
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

STORED = StoredOutput(uri="memory://x", size_bytes=1, row_count=None, content_hash="sha256:0")
LIMIT = 2  # tests.pipelines.limits: ``limited`` has concurrency_limit=2
PICK = st.integers(min_value=0, max_value=1_000)


def _step(asset: str, key: str, *upstreams: tuple[str, str]) -> services.StepRequest:
    return services.StepRequest(asset=asset, partition_key=f"s:{key}", upstream_keys=upstreams)


def _create(steps: list[services.StepRequest], max_parallel: int | None = None) -> str:
    created = services.create_run(
        services.RunRequest(
            kind=RunKind.MATERIALIZE_ALL,
            selection=["x"],
            steps=steps,
            max_parallel=max_parallel,
            requested_by="requester",
        )
    )
    return str(created.run.pk)


class EngineMachine(RuleBasedStateMachine):
    """Random interleavings of every transition; the invariants hold after each one."""

    def __init__(self) -> None:
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.workers = 0
        self.stale_owners: dict[int, str] = {}
        self.run_ids = [
            _create(
                [
                    _step("unlimited", "k0"),
                    _step("unlimited", "k1"),
                    _step("limited", "k0", ("unlimited", "s:k0"), ("unlimited", "s:k1")),
                    _step("limited", "k1", ("limited", "s:k0")),
                    _step("unlimited", "k2", ("unlimited", "s:k0")),
                ]
            ),
            _create([_step("limited", f"k{n}") for n in range(2, 6)]),
            _create([_step("unlimited", f"k{n}") for n in range(3, 7)], max_parallel=1),
            _create([_step("unlimited", f"b{n}") for n in range(2)]),
        ]
        self.tallied = self.run_ids[3]
        self.tally: services.RunTally | None = None
        self.lost: Counter[StepCount] = Counter()

    # Picking rows -----------------------------------------------------------------------

    def _steps(self, status: StepStatus) -> list[Materialization]:
        return list(
            Materialization.objects.filter(run_id__in=self.run_ids, status=status).order_by("id")
        )

    def _pick(self, status: StepStatus, index: int) -> Materialization | None:
        rows = self._steps(status)
        return rows[index % len(rows)] if rows else None

    def _running(self, index: int) -> Materialization | None:
        """A running step; when none runs, a worker first claims a queued one."""
        return self._pick(StepStatus.RUNNING, index) or self._claim(index)

    def _claim(self, index: int) -> Materialization | None:
        queued = self._pick(StepStatus.QUEUED, index)
        if queued is None:
            return None
        Materialization.objects.filter(pk=queued.pk).update(not_before=None)  # time passes
        self.workers += 1
        return services.claim_step(queued.pk, f"worker-{self.workers}")

    # Transitions ------------------------------------------------------------------------

    @rule(index=PICK)
    def claim(self, index: int) -> None:
        """A worker takes a queued step."""
        self._claim(index)

    @rule(index=PICK)
    def succeed(self, index: int) -> None:
        """A running step's worker records its success."""
        step = self._running(index)
        if step is not None:
            assert services.complete_step(step, STORED, [], owner=step.lease_owner).won

    @rule(index=PICK)
    def succeed_in_a_batch(self, index: int) -> None:
        """A batch's step of the tallied backfill succeeds; its count waits in the tally."""
        rows = [r for r in self._steps(StepStatus.RUNNING) if str(r.run_id) == self.tallied] or [
            r for r in self._steps(StepStatus.QUEUED) if str(r.run_id) == self.tallied
        ]
        if not rows:
            return
        step = rows[index % len(rows)]
        if step.status == StepStatus.QUEUED:
            step = self._claim_this(step)
        if self.tally is None:
            run = Run.objects.get(pk=self.tallied)
            self.tally = services.tally_for(run, step.asset)
            assert self.tally is not None  # no edges, no cap, no limit: counted per batch
        tally = self.tally
        with TestCase.captureOnCommitCallbacks() as callbacks:
            assert services.complete_step(
                step,
                STORED,
                [],
                owner=step.lease_owner,
                batch=services.Batch(owner="w", tally=tally),
            ).won
        for callback in callbacks:  # the tally's own (this example's transaction never commits)
            if getattr(callback, "func", None) == tally.add:
                callback()

    @rule()
    def settle_the_batch(self) -> None:
        """The batch ends (or a second passed): its tally is settled on the run."""
        if self.tally is not None:
            self.tally.flush()
            self.tally = None

    @rule()
    def kill_the_batch_worker(self) -> None:
        """kill -9 of the batch's worker: what its tally counted is lost."""
        if self.tally is not None:
            self.lost.update(self.tally.delta)
            self.tally = None

    @rule()
    def sweep(self) -> None:
        """The sweeper, long after: runs whose steps all ended are recounted and finished."""
        services.settle_stranded_runs(now=timezone.now() + dt.timedelta(hours=1))
        if Run.objects.get(pk=self.tallied).finished_at is not None:
            self.lost = Counter()

    def _claim_this(self, queued: Materialization) -> Materialization:
        Materialization.objects.filter(pk=queued.pk).update(not_before=None)  # time passes
        self.workers += 1
        claimed = services.claim_step(queued.pk, f"worker-{self.workers}")
        assert claimed is not None
        return claimed

    @rule(index=PICK)
    def fail(self, index: int) -> None:
        """A running step fails for good; its downstream is upstream_failed."""
        step = self._running(index)
        if step is not None:
            assert services.fail_step(step, ExecutionError("boom"), owner=step.lease_owner).won

    @rule(index=PICK)
    def retry(self, index: int) -> None:
        """A running step hits a retryable error and goes back to the queue."""
        step = self._running(index)
        if step is not None:
            error = ExecutionError("again", retryable=True)
            delay = dt.timedelta(seconds=1)
            assert services.retry_step(step, error, owner=step.lease_owner, delay=delay).won

    @rule(index=PICK)
    def crash_and_recover(self, index: int) -> None:
        """A worker dies mid-step; the sweeper takes the step back once the lease expires."""
        step = self._running(index)
        if step is None:
            return
        past = timezone.now() - dt.timedelta(seconds=1)
        Materialization.objects.filter(pk=step.pk).update(lease_expires_at=past)
        self.stale_owners[step.pk] = step.lease_owner
        assert services.recover_stale_steps(now=timezone.now()) is not None

    @rule(index=PICK)
    def late_completion(self, index: int) -> None:
        """The worker that lost its lease comes back and tries to record a success."""
        if not self.stale_owners:
            return
        step_id = sorted(self.stale_owners)[index % len(self.stale_owners)]
        step = Materialization.objects.get(pk=step_id)
        assert not services.complete_step(step, STORED, [], owner=self.stale_owners[step_id]).won

    @rule(index=PICK)
    def park(self, index: int) -> None:
        """A checkpoint asks for approval: the step waits and frees its slot."""
        step = self._running(index)
        # A step whose approval was decided resumes into storing, never into a second request.
        if step is not None and not Approval.objects.filter(materialization=step).exists():
            approval_services.request_approval(
                step, owner=step.lease_owner, message="ok?", value=1, consumed=[], timeout=None
            )

    @rule(index=PICK, approve=st.booleans())
    def decide(self, index: int, *, approve: bool) -> None:
        """A reviewer decides a pending approval (a second decision is refused elsewhere)."""
        pending = list(
            Approval.objects.filter(run_id__in=self.run_ids, status=Approval.Status.PENDING)
        )
        if not pending:
            return
        approval = pending[index % len(pending)]
        decision = "approve" if approve else "reject"
        approval_services.decide_approval(
            approval.pk, decision, actor="reviewer", reason="" if approve else "no"
        )

    @rule(index=PICK)
    def skip(self, index: int) -> None:
        """A reviewer's ``skip`` option: the waiting step and its pending downstream end skipped."""
        waiting = self._pick(StepStatus.WAITING_APPROVAL, index)
        if waiting is None:
            return
        with transaction.atomic():
            won = Approval.objects.filter(
                materialization=waiting, status=Approval.Status.PENDING
            ).update(status=Approval.Status.SKIPPED)
            assert services.skip_step(waiting.pk).won == bool(won)

    @rule(index=PICK)
    def cancel(self, index: int) -> None:
        """Someone cancels one of the runs."""
        services.cancel_run(self.run_ids[index % len(self.run_ids)], actor="carol")

    @rule()
    def relay(self) -> None:
        """The relay's backstop: steps of the limited asset take slots freed elsewhere."""
        services.release_for_asset("limited")

    # Invariants -------------------------------------------------------------------------

    @invariant()
    def runs_agree_with_their_steps(self) -> None:
        """Stored status and counters are what the step rows say, less what tallies hold."""
        for run in Run.objects.filter(pk__in=self.run_ids):
            statuses = list(
                Materialization.objects.filter(run=run).values_list("status", flat=True)
            )
            counts = count_steps(statuses)
            assert run.status == run_status(run.step_counts()), run.pk
            assert run.steps_total == len(statuses)
            assert (run.finished_at is not None) == (run.steps_remaining == 0)
            if run.finished_at is not None:
                assert not set(statuses) - TERMINAL_STEP_STATUSES  # never finished early
            held: Counter[StepCount] = Counter(self.lost)  # negative counts too (not ``+``)
            held.update(self.tally.delta if self.tally else {})
            if str(run.pk) != self.tallied or run.finished_at is not None or not any(held.values()):
                assert run.status == derive_run_status(statuses), run.pk
                assert run.step_counts() == counts
            else:
                pending = Counter(run.step_counts())
                pending.update(held)
                assert {c: pending[c] for c in StepCount} == counts

    @invariant()
    def no_step_succeeds_twice(self) -> None:
        """One ``asset.materialized`` event per successful step, and none for other steps."""
        events = (
            AuditEvent.objects.filter(
                run_id__in=self.run_ids, action=AuditEvent.Action.ASSET_MATERIALIZED
            )
            .values("details__materialization_id")
            .annotate(n=Count("id"))
        )
        recorded = {row["details__materialization_id"]: row["n"] for row in events}
        assert all(n == 1 for n in recorded.values())
        succeeded = set(
            Materialization.objects.filter(
                run_id__in=self.run_ids, status=StepStatus.SUCCESS
            ).values_list("pk", flat=True)
        )
        assert set(recorded) == succeeded

    @invariant()
    def the_concurrency_limit_holds(self) -> None:
        """At most LIMIT steps of the limited asset are queued or running across all runs."""
        active = Materialization.objects.filter(
            asset="limited", status__in=(StepStatus.QUEUED, StepStatus.RUNNING)
        ).count()
        assert active <= LIMIT

    @invariant()
    def nothing_downstream_of_a_skipped_step_goes_on(self) -> None:
        """A skipped step's downstream is never released, running, waiting or successful."""
        downstream = StepEdge.objects.filter(
            upstream__run_id__in=self.run_ids, upstream__status=StepStatus.SKIPPED
        ).values_list("downstream__status", flat=True)
        assert not set(downstream) - {
            StepStatus.SKIPPED,
            StepStatus.UPSTREAM_FAILED,
            StepStatus.CANCELED,
        }

    # Drain ------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Let the system finish: every queued step runs and succeeds, approvals are approved."""
        for _ in range(200):
            services.release_for_asset("limited")
            for approval in Approval.objects.filter(
                run_id__in=self.run_ids, status=Approval.Status.PENDING
            ):
                approval_services.decide_approval(approval.pk, "approve", actor="reviewer")
            for running in self._steps(StepStatus.RUNNING):
                services.complete_step(running, STORED, [], owner=running.lease_owner)
            claimed = self._claim(0)
            if claimed is not None:
                services.complete_step(claimed, STORED, [], owner=claimed.lease_owner)
            if not Materialization.objects.filter(run_id__in=self.run_ids).exclude(
                status__in=TERMINAL_STEP_STATUSES
            ):
                self.settle_the_batch()
                self.sweep()
                return

    def teardown(self) -> None:
        """Drain, check that nothing is left unfinished, and roll the example back."""
        try:
            self._drain()
            left = list(
                Materialization.objects.filter(run_id__in=self.run_ids)
                .exclude(status__in=TERMINAL_STEP_STATUSES)
                .values_list("asset", "partition_key", "status")
            )
            assert left == [], left
            self.runs_agree_with_their_steps()
        finally:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)


def test_the_engine_keeps_runs_consistent_under_any_interleaving(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions("tests.pipelines.limits", resources={})
    assert get_registry().concurrency_limits == {"limited": LIMIT}
    machine: Any = EngineMachine
    test_case = machine.TestCase
    test_case.settings = settings(
        max_examples=30,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    test_case().runTest()
