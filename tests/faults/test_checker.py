"""The checker itself: a clean history passes, and a tampered one is reported as lost or doubled.

A checker that always says "0 lost" proves nothing; this one is shown a small real history and
then the same history with one fault of each kind written into it by hand (the tests share the
history and run in this order).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import redis

from tests.faults.harness import FAST, Cluster, Scenario

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fault]


@pytest.fixture(scope="module")
def finished(cluster: Cluster, fault_root: Path) -> Iterator[Scenario]:
    """A small scenario run to the end without any fault."""
    scenario = Scenario(name="checker_self_test", cluster=cluster, mode=FAST, root=fault_root)
    try:
        scenario.start()
        scenario.launch()
        scenario.wait_quiescent()
        yield scenario
    finally:
        scenario.close()


def test_a_clean_history_passes(finished: Scenario) -> None:
    report = finished.check()
    assert (report.lost, report.doubled, report.violations) == (0, 0, [])
    assert report.effects == report.steps == report.requests
    assert report.executions == report.requests
    assert (report.mismatches, report.reexecutions) == (0, 0)


def _rewrite(conn: psycopg.Connection[Any], step_id: int, uri: str, **changes: object) -> None:
    """Change fields of a stored value and record the new body's hash, as if it were written so."""
    path = Path(unquote(urlsplit(uri).path))
    body = json.dumps({**json.loads(path.read_text()), **changes}).encode()
    path.write_bytes(body)
    conn.execute(
        "UPDATE assets_materialization SET metadata = metadata || jsonb_build_object("
        "'content_hash', %s::text, 'size_bytes', %s::int) WHERE id = %s",
        ("sha256:" + hashlib.sha256(body).hexdigest(), len(body), step_id),
    )


def test_tampered_history_is_reported(finished: Scenario) -> None:
    finished.close()  # no worker may consume the stray message below
    with psycopg.connect(finished.conninfo, autocommit=True) as conn:
        days = conn.execute(
            "SELECT id, metadata->>'uri', run_id::text, partition_key FROM assets_materialization "
            "WHERE asset = 'f_day' AND status = 'success' ORDER BY id LIMIT 6"
        ).fetchall()
        (corrupt_id, corrupt_uri, *_), (doubled_id, *_), (stuck_id, *_) = days[:3]
        (stale_id, stale_uri, *_), (_, _, rerun_run, rerun_key), (misread_id, misread_uri, *_) = (
            days[3:]
        )
        Path(unquote(urlsplit(corrupt_uri).path)).write_text('{"tampered": true}')
        # A stale attempt's value in place of the recorded one, its hash recorded too: only
        # the fencing check can see it.
        _rewrite(conn, stale_id, stale_uri, attempt=99)
        # A value that read an upstream attempt its lineage does not name (lineage intact).
        _rewrite(conn, misread_id, misread_uri, read={"f_seed[]": 9})
        conn.execute(
            "INSERT INTO lineage_auditevent (action, actor_type, actor, run_id, asset, "
            "partition_key, details, created_at) SELECT action, actor_type, actor, run_id, asset, "
            "partition_key, details, now() FROM lineage_auditevent "
            "WHERE details->>'materialization_id' = %s",
            (str(doubled_id),),
        )
        conn.execute(
            "UPDATE assets_materialization SET status = 'running', "
            "lease_expires_at = now() - interval '1 minute' WHERE id = %s",
            (stuck_id,),
        )
        conn.execute(
            "DELETE FROM lineage_lineageedge WHERE id = (SELECT e.id FROM lineage_lineageedge e "
            "JOIN assets_materialization d ON d.id = e.downstream_id "
            "WHERE d.asset = 'f_week' LIMIT 1)"
        )
    client = redis.Redis.from_url(finished.cluster.redis.url())
    client.lpush("flowstone", b"{}")
    client.close()
    # One attempt's body twice, and a second attempt of a step no fault touched.
    log = finished.stack.data_dir / "executions.log"
    line = next(json.loads(x) for x in log.read_text().splitlines() if '"f_day"' in x)
    rerun = {"asset": "f_day", "partition": rerun_key, "run_id": rerun_run, "attempt": 2}
    with log.open("a") as out:
        out.write(json.dumps(line) + "\n" + json.dumps(rerun) + "\n")

    report = finished.check()
    text = "\n".join(report.violations)
    assert report.lost == 2  # the corrupt output and the stuck step
    assert report.doubled == 2  # the second audit event, and the stuck step's audit event
    assert f"success {corrupt_id} f_day" in text
    assert "output hash" in text
    assert f"success {doubled_id} f_day" in text
    assert "2 audit events" in text
    assert f"step {stuck_id} f_day" in text
    assert "still running" in text
    assert "lineage of" in text
    assert "1 messages left in the step queues" in text
    # the stale value, the misread upstream, and the fan-in whose edge is gone
    assert report.mismatches == 3
    assert f"success {misread_id} f_day[" in text
    assert "read {'f_seed[]': 9}, its lineage says {'f_seed[]': 1}" in text
    assert f"success {stale_id} f_day" in text
    assert "its stored value is attempt 99's" in text
    assert "its lineage says" in text
    assert f"attempt 1 of f_day[{line['partition']}] ran its body 2 times" in text
    assert f"f_day[{rerun_key}] ran 2 times but was not in flight at a fault" in text
    assert report.reexecutions == 2
