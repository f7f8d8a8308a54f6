"""The materialize, backfill and runs commands: output, --json and exit codes."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from assets.models import Materialization, Run
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _pipelines(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diamond", "tests.pipelines.shapes")


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _exit_code(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as caught:
        _run(*args)
    return caught.value.returncode, str(caught.value)


def test_materialize_all_with_json_output() -> None:
    out, _ = _run("materialize", "sink", "--partition", "eu", "--all", "--json")
    data = json.loads(out)
    assert data["status"] == "success"
    assert [s["asset"] for s in data["steps"]] == ["source", "left", "right", "sink"]


def test_materialize_by_encoded_key_and_text_table() -> None:
    out, _ = _run("materialize", "source", "--partition-key", "s:a|b:c")
    assert out.splitlines()[0].endswith(": success")
    assert "source[s:a|b:c] success (attempt 1)" in out


def test_exit_codes() -> None:
    assert _exit_code("materialize", "broken", "--partition", "eu", "--all")[0] == 1
    code, message = _exit_code("materialize", "nope")
    assert (code, message) == (2, "[asset_not_found] unknown asset 'nope'")
    assert _exit_code("materialize", "source", "--partition", "mars")[0] == 2
    assert _exit_code("materialize", "source", "--partition-key", "x:bad")[0] == 2
    assert _exit_code("materialize", "source", "--partition", "eu", "--config", "[1]")[0] == 2


def test_async_materialize_only_enqueues() -> None:
    out, _ = _run("materialize", "source", "--partition", "eu", "--async", "--json")
    data = json.loads(out)
    assert data["status"] == "enqueued"
    assert Materialization.objects.get(run_id=data["id"]).status == "queued"


def test_backfill_a_range_with_progress_then_skip_on_rerun() -> None:
    out, err = _run("backfill", "calendar", "--from", "2025-01-01", "--to", "2025-01-02")
    assert "(2 steps, 0 not successful)" in out
    assert err.splitlines()[-1] == "calendar: 2/2 steps ended (success)"  # plain: not a TTY
    out, _ = _run("backfill", "calendar", "--all", "--json")
    assert [s["partition_key"] for s in json.loads(out)["steps"]] == ["d:2025-01-03"]
    out, _ = _run("backfill", "calendar", "--partition", "2025-01-01", "--force", "--no-progress")
    assert "(1 steps, 0 not successful)" in out
    assert _exit_code("backfill", "calendar", "--from", "1999-01-01")[0] == 2
    assert _exit_code("backfill", "calendar_summary")[0] == 2


def test_runs_list_show_cancel() -> None:
    _run("materialize", "sink", "--partition", "us", "--all")
    queued, _ = _run("materialize", "source", "--partition", "eu", "--async", "--json")
    queued_id = json.loads(queued)["id"]
    listing = json.loads(_run("runs", "list", "--json")[0])
    assert [r["status"] for r in listing] == ["running", "success"]  # queued for a worker
    shown, _ = _run("runs", "show", listing[1]["id"])
    assert [line.split()[0] for line in shown.splitlines()[1:]] == [
        "source",
        "left",
        "right",
        "sink",
    ]
    out, _ = _run("runs", "cancel", queued_id)
    assert out == f"run {queued_id}: 1 step(s) canceled\n"
    assert Run.objects.get(pk=queued_id).status == "canceled"
    assert _exit_code("runs", "show", "not-a-run")[0] == 2
    assert _exit_code("runs", "show")[0] == 2
    assert json.loads(_run("runs", "cancel", queued_id, "--json")[0]) == {
        "id": queued_id,
        "canceled_steps": 0,
    }


@pytest.mark.parametrize(
    ("option", "text", "error"),
    [
        ("--config", '{"s": "a\\u0000b"}', '--config["s"]: string contains a NUL character'),
        ("--config", "[1]", "--config: must be a JSON object, not list"),
        ("--config", "{not json", "--config: not valid JSON"),
        ("--config", "[" * 100_000, "--config: nested deeper than 32 levels"),
        ("--tags", '{"t": NaN}', '--tags["t"]: nan is not a finite number'),
    ],
)
def test_bad_json_options_exit_2_before_a_run_exists(option: str, text: str, error: str) -> None:
    code, message = _exit_code("materialize", "source", "--partition", "eu", option, text)
    assert (code, message.startswith(error)) == (2, True), message
    assert Run.objects.count() == 0
