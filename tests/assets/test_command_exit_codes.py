"""Every exit code docs/cli.md lists, for every command: a table run through ``call_command``,
then as real processes (their exit status, stderr one line without a traceback), then a wait
that ends at an approval checkpoint on a real Celery worker.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError

import flowstone
from approvals.models import Approval
from assets.models import Run
from tests.workers import ROOT, Services, worker_stack

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from pytest_django import Settings

    from tests.conftest import UseDefinitions

GATES = "tests.pipelines.gates"
PIPELINES = ("tests.pipelines.diamond", "tests.pipelines.shapes", GATES)
DEMO_CATALOG_CLASS = "demo.resources.ProductCatalog"
WAIT = 120


def _exit_code(*args: str) -> tuple[int, str, str]:
    """Run a command like ``manage.py`` does; return its exit code, stdout and message."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), err.getvalue()


@pytest.fixture
def state(use_definitions: UseDefinitions) -> dict[str, str]:
    """A run, a pending and a decided approval, a decider and a user who may not decide."""
    use_definitions(*PIPELINES)
    run = flowstone.materialize_all("sink", "eu")
    failed = flowstone.materialize_all("after_broken", "us")
    flowstone.backfill("g_invoice")
    flowstone.materialize("g_payout", "large")
    flowstone.materialize("g_payout", "huge")
    pending, decided = Approval.objects.order_by("id")
    bob = User.objects.create_user("bob")
    bob.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    User.objects.create_user("victor")
    call_command("approvals", "approve", str(decided.pk), "--user", "bob", stdout=io.StringIO())
    return {
        "run": run.run_id,
        "failed": failed.run_id,
        "approval": str(pending.pk),
        "decided": str(decided.pk),
    }


# (args, exit code, a part of the output or message); {run}, {approval} and {decided} are filled
# in from ``state``.
CASES = [
    # materialize
    (("materialize", "sink", "--partition", "us", "--all"), 0, ": success"),
    (("materialize", "source", "--partition", "eu", "--async", "--json"), 0, '"enqueued"'),
    (("materialize", "broken", "--partition", "eu", "--all"), 1, "is failed"),
    (("materialize", "nope"), 2, "[asset_not_found] unknown asset 'nope'"),
    (("materialize", "source", "--partition", "mars"), 2, "'mars' is not one of the static"),
    (("materialize", "source"), 2, "is partitioned; pass --partition (or --partition-key)"),
    (("materialize", "source", "--partition", "eu", "--config", "[1]"), 2, "--config: must be"),
    (("materialize", "source", "--partition", "eu", "--wait", "5"), 2, "--wait needs --async"),
    (("materialize", "source", "--bogus"), 2, "unrecognized arguments: --bogus"),
    (("materialize", "g_payout", "--partition", "small"), 0, ": success"),
    (("materialize", "g_payout", "--partition", "a|b"), 3, "waits for approval"),
    (("materialize", "source", "--partition", "eu", "--async", "--wait", "0"), 3, "still running"),
    # backfill
    (("backfill", "calendar", "--all"), 0, "(3 steps, 0 not successful)"),
    (("backfill", "calendar", "--from", "2025-01-02", "--to", "2025-01-02"), 0, "(1 steps"),
    (("backfill", "calendar", "--all", "--async", "--no-wait", "--json"), 0, '"enqueued"'),
    (("backfill", "after_broken", "--all"), 1, "is failed"),
    (("backfill", "nope", "--all"), 2, "[asset_not_found] unknown asset 'nope'"),
    (("backfill", "calendar"), 2, "choose the partitions: --all, --from/--to, or --partition"),
    (("backfill", "calendar", "--all", "--to", "2025-01-02"), 2, "--all and --from/--to cannot"),
    (("backfill", "calendar", "--all", "--partition", "2025-01-02"), 2, "cannot be combined"),
    (
        ("backfill", "calendar", "--from", "2025-01-03", "--to", "2025-01-01"),
        2,
        "--from 2025-01-03 is after --to 2025-01-01; nothing to backfill",
    ),
    (
        ("backfill", "calendar", "--from", "1999-01-01"),
        2,
        (
            "1999-01-01 is before the first partition (2025-01-01) of the daily partitions from "
            "2025-01-01 to 2025-01-04 (exclusive)"
        ),
    ),
    (("backfill", "calendar_summary", "--all"), 2, "is not partitioned; use materialize"),
    (("backfill", "calendar", "--all", "--max-parallel", "2"), 2, "--max-parallel needs --async"),
    (
        ("backfill", "calendar", "--all", "--async", "--max-parallel", "0"),
        2,
        "--max-parallel must be a positive integer",
    ),
    (("backfill", "g_payout", "--partition", "a|b"), 3, "waits for approval"),
    # runs
    (("runs", "list"), 0, "success"),
    (("runs", "list", "--status", "success", "--json"), 0, '"id"'),
    (("runs", "show", "{run}"), 0, ": success"),
    (("runs", "cancel", "{run}"), 0, "0 step(s) canceled"),
    (("runs", "list", "--status", "bogus"), 2, "invalid choice: 'bogus' (choose from 'pending'"),
    (("runs", "list", "--limit", "0"), 2, "--limit"),
    (("runs", "show", "not-a-run"), 2, "unknown run id 'not-a-run'"),
    (("runs", "show"), 2, "required: RUN"),
    (("runs",), 2, "required: ACTION"),
    (("runs", "show", "{failed}"), 0, "attempt 1 failed on inprocess:"),
    (("runs", "reexecute", "{failed}"), 1, "is failed"),
    (("runs", "reexecute", "{failed}", "--async", "--json"), 0, '"enqueued"'),
    (("runs", "reexecute", "{run}"), 2, "has no failed or canceled step to re-execute"),
    (("runs", "reexecute", "not-a-run"), 2, "unknown run id 'not-a-run'"),
    (("runs", "reexecute", "{failed}", "--wait", "5"), 2, "--wait needs --async"),
    # approvals
    (("approvals", "list", "--json"), 0, '"status": "pending"'),
    (("approvals", "approve", "{approval}", "--user", "bob"), 0, "approved"),
    (("approvals", "approve", "{decided}", "--user", "bob"), 1, "is already approved by bob"),
    (("approvals", "approve", "{approval}", "--user", "victor"), 1, "may not decide approvals"),
    (("approvals", "approve", "999999", "--user", "bob"), 2, "unknown approval '999999'"),
    (("approvals", "approve", "abc", "--user", "bob"), 2, "unknown approval 'abc'"),
    (("approvals", "approve", "{approval}", "--user", "nobody"), 2, "unknown user 'nobody'"),
    (("approvals", "approve", "{approval}"), 2, "required: --user"),
    (("approvals", "modify", "{approval}", "--user", "bob", "--value", "{bad"), 2, "not valid"),
    (
        ("approvals", "modify", "{approval}", "--user", "bob", "--value", '{"amount": -1}'),
        2,
        "amount must be a non-negative integer",
    ),
    (("approvals", "list", "--status", "bogus"), 2, "invalid choice: 'bogus'"),
    # lineage
    (("lineage", "sink", "--partition", "eu"), 0, "sink"),
    (("lineage", "sink", "--partition", "us"), 1, "no successful materialization"),
    (("lineage", "nope"), 2, "unknown asset 'nope'"),
    (("lineage", "sink", "--depth", "0"), 2, "--depth"),
]


@pytest.mark.django_db
@pytest.mark.embedded
@pytest.mark.parametrize(("args", "code", "text"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_exit_codes(state: dict[str, str], args: tuple[str, ...], code: int, text: str) -> None:
    runs_before = Run.objects.count()
    returned, out, message = _exit_code(*(state.get(arg.strip("{}"), arg) for arg in args))
    assert (returned, text in out + message) == (code, True), (out, message)
    if code == 2:
        assert "\n" not in message
        assert Run.objects.count() == runs_before  # invalid input records nothing


DEMO_CASES = [
    ((), {}, 0, "weekly_report for the week of 2025-12-01:"),
    (("--json",), {}, 0, '"report": {"days": ["2025-12-01", '),
    (("--week", "2025-12-08"), {}, 3, "waits for approval"),
    (("--week", "2025-12-03"), {}, 2, "2025-12-03 is a Wednesday"),
    (("--week", "next"), {}, 2, "argument --week"),
    ((), {"markup": "not a number"}, 1, "is failed"),
]


@pytest.mark.django_db
@pytest.mark.embedded
@pytest.mark.parametrize(("args", "options", "code", "text"), DEMO_CASES)
def test_demo_exit_codes(
    use_definitions: UseDefinitions,
    args: tuple[str, ...],
    options: dict[str, str],
    code: int,
    text: str,
) -> None:
    catalog = {"CLASS": DEMO_CATALOG_CLASS, "OPTIONS": {"currency": "EUR", **options}}
    use_definitions("demo.assets", resources={"catalog": catalog})
    returned, out, message = _exit_code("demo", *args)
    assert (returned, text in out + message) == (code, True), (out, message)


# --- real processes ---------------------------------------------------------------------------


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, GATES) as started:
        yield started


def _manage(stack: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


PROCESS_CASES = [
    (("runs", "list", "--status", "bogus"), 2, "invalid choice: 'bogus' (choose from 'pending'"),
    (("materialize", "nope"), 2, "CommandError: [asset_not_found] unknown asset 'nope'"),
    (
        ("backfill", "g_invoice", "--from", "large", "--to", "small"),
        2,
        "CommandError: --from large is after --to small; nothing to backfill",
    ),
    (("materialize", "g_quick", "--partition", "small"), 0, ""),
    (("materialize", "g_auto", "--partition", "negative", "--all"), 1, "checkpoint_rejected"),
    (("materialize", "g_quick", "--partition", "small", "--async", "--wait", "0"), 3, "still"),
    (("approvals", "approve", "12345", "--user", "bob"), 2, "unknown user 'bob'"),
    (("lineage", "g_quick", "--partition", "small"), 1, "no successful materialization"),
]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("args", "code", "text"), PROCESS_CASES)
def test_exit_codes_of_real_processes(
    stack: Services, args: tuple[str, ...], code: int, text: str
) -> None:
    completed = _manage(stack, *args)
    assert completed.returncode == code, completed.stderr
    assert text in completed.stderr
    assert "Traceback" not in completed.stderr
    if code == 2:
        assert Run.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_every_command_takes_json(stack: Services) -> None:
    stack.extra_env["FLOWSTONE_DEFINITIONS"] = "demo.assets"
    completed = _manage(stack, "demo", "--json")
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout)
    assert (data["status"], len(data["steps"]), data["approvals"]) == ("success", 23, [])
    assert str(Run.objects.get().pk) == data["id"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_wait_ends_at_an_approval_checkpoint_on_a_worker(stack: Services) -> None:
    stack.start_worker("w1", concurrency=2)
    assert flowstone.backfill_async("g_invoice").wait(WAIT).is_success

    backfill = _manage(stack, "backfill", "g_payout", "--all", "--async")
    assert backfill.returncode == 3, backfill.stderr
    run = Run.objects.get(kind="backfill", selection=["g_payout"])
    assert run.status == "waiting_approval"
    approvals = Approval.objects.filter(run=run)
    assert sorted(a.partition_key for a in approvals) == ["s:a|b", "s:huge", "s:large"]
    named = ", ".join(
        f"{a.pk} (g_payout, partition {a.partition_key[2:]})"
        for a in Approval.objects.filter(run=run).order_by("requested_at", "id")
    )
    assert backfill.stderr.strip().splitlines()[-1] == (
        f"CommandError: run {run.pk} waits for approvals {named}; decide with: python manage.py "
        "approvals approve ID --user USER (or reject ID --user USER --reason TEXT)"
    )
    # stderr is a pipe: the progress is plain lines, the last one at the approval.
    assert backfill.stderr.strip().splitlines()[-2] == (
        "g_payout: 2/5 steps ended (waiting_approval)"
    )
    assert backfill.stdout == f"run {run.pk}: waiting_approval (5 steps, 3 not successful)\n"

    waited = _manage(
        stack,
        "materialize",
        "g_payout",
        "--partition",
        "large",
        "--async",
        "--wait",
        "60",
        "--json",
    )
    assert waited.returncode == 3, waited.stderr
    data = json.loads(waited.stdout)
    assert data["status"] == "waiting_approval"
    assert [a["asset"] for a in data["approvals"]] == ["g_payout"]
    assert f"approve {data['approvals'][0]['id']} --user USER" in waited.stderr


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_progress_on_a_terminal_is_a_live_bar(stack: Services) -> None:
    controller, terminal = pty.openpty()
    try:
        completed = subprocess.run(
            [sys.executable, "manage.py", "backfill", "g_invoice", "--all"],
            cwd=ROOT,
            env={**stack.env(), "COLUMNS": "100"},
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=WAIT,
            check=False,
        )
        os.close(terminal)
        shown = b""
        while chunk := _read_available(controller):
            shown += chunk
    finally:
        os.close(controller)
    assert completed.returncode == 0
    text = shown.decode()
    assert "\r" in text  # redrawn in place, not one line per update
    assert "g_invoice: 100%" in text
    assert "5/5" in text
    assert "steps ended" not in text  # the plain lines are for pipes and files


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other end is closed and everything was read
        return b""
