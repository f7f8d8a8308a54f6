"""The baselines' Celery app: ``celery -A benchmarks.celery_app worker`` (benchmark only).

Configured exactly like FlowStone's app (``CELERY_*`` from ``flowstone.settings``: broker, JSON
only, late acks with reject-on-worker-lost, prefetch 1, no results), with two tasks:

- ``bench.ceiling``: a raw Celery task running the workload body and recording its publish,
  start and end times (``hops`` > 0 publishes the next task: a chain);
- ``bench.floor``: the hand-written floor, one task per step doing the minimal work by hand:
  load the run's config row, check the upstream rows, run the function, store the output with
  the same filesystem IO manager, then in one transaction upsert the step row, insert its lineage
  and decrement its downstream counters, and after commit enqueue the downstream steps whose
  counters reached zero. One persistent psycopg connection per pool process.
"""

from __future__ import annotations

import json
import os
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from celery import Celery
from celery.signals import worker_ready

from benchmarks import probes
from benchmarks.workloads import BODIES, SHAPES, assets_of, downstreams_of, run_body, upstreams_of
from flowstone.io.base import IOTarget
from flowstone.io.filesystem import FilesystemIOManager

if TYPE_CHECKING:
    import psycopg

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowstone.settings")

CEILING_QUEUE: Final = "bench_ceiling"
FLOOR_QUEUE: Final = "bench_floor"

app = Celery("flowstone_bench")
app.config_from_object("django.conf:settings", namespace="CELERY")

BODY_OF: Final = {
    name: body for shape in SHAPES for body in BODIES for name in assets_of(shape, body)
}
UPSTREAMS: Final = {
    name: ups
    for shape in SHAPES
    for body in BODIES
    for name, ups in upstreams_of(shape, body).items()
}
DOWNSTREAMS: Final = {
    name: downs
    for shape in SHAPES
    for body in BODIES
    for name, downs in downstreams_of(shape, body).items()
}


@worker_ready.connect(weak=False)
def _ready(**kwargs: Any) -> None:  # noqa: ARG001
    probes.mark_ready()


@app.task(name="bench.ceiling", acks_late=True, reject_on_worker_lost=True)
def ceiling(published: float, body: str, hops: int) -> None:
    """A raw Celery task: the body, its timestamps, and the next hop of a chain."""
    started = time.time()
    run_body(body)
    probes.record_event(published=published, started=started, finished=time.time())
    if hops > 0:
        ceiling.apply_async(
            kwargs={"published": time.time(), "body": body, "hops": hops - 1},
            queue=CEILING_QUEUE,
        )


class _Floor:
    """Per-process state of the floor task: its connection and its store."""

    connection: psycopg.Connection[Any] | None = None
    pid: int = 0
    store: FilesystemIOManager | None = None


def _connection() -> psycopg.Connection[Any]:
    import psycopg  # noqa: PLC0415  # only the floor's pool processes connect

    if _Floor.connection is None or _Floor.pid != os.getpid() or _Floor.connection.closed:
        _Floor.connection = psycopg.connect(os.environ["BENCH_FLOOR_DSN"], autocommit=True)
        _Floor.pid = os.getpid()
        probes.count("connections")
    return _Floor.connection


def _store() -> FilesystemIOManager:
    if _Floor.store is None:
        _Floor.store = FilesystemIOManager(os.environ["BENCH_FLOOR_STORE"])
    return _Floor.store


def _execute(cursor: psycopg.Cursor[Any], sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    probes.count("sql")
    cursor.execute(sql, params)
    return cursor.fetchall() if cursor.description else []


UPSERT_STEP: Final = """
INSERT INTO floor_step
    (run_id, asset, partition_key, status, remaining, started_at, finished_at, metadata)
VALUES (%s, %s, %s, 'success', 0, to_timestamp(%s), to_timestamp(%s), %s)
ON CONFLICT (run_id, asset, partition_key) DO UPDATE SET
    status = 'success', started_at = EXCLUDED.started_at,
    finished_at = EXCLUDED.finished_at, metadata = EXCLUDED.metadata
RETURNING id
"""


@app.task(name="bench.floor", acks_late=True, reject_on_worker_lost=True)
def floor(run_id: str, asset: str, partition: str) -> None:
    """One step of the hand-written floor (see the module docstring)."""
    started = time.time()
    upstreams = UPSTREAMS[asset]
    downstreams = DOWNSTREAMS[asset]
    connection = _connection()
    with connection.cursor() as cursor:
        config = _execute(cursor, "SELECT config FROM floor_run WHERE id = %s", [run_id])
        if not config:
            raise LookupError(f"unknown floor run {run_id}")
        upstream_ids: list[int] = []
        if upstreams:
            rows = _execute(
                cursor,
                "SELECT id, status FROM floor_step "
                "WHERE run_id = %s AND partition_key = %s AND asset = ANY(%s)",
                [run_id, partition, list(upstreams)],
            )
            if len(rows) != len(upstreams) or any(status != "success" for _, status in rows):
                raise RuntimeError(f"upstreams of {asset}[{partition}] not ready: {rows}")
            upstream_ids = [row_id for row_id, _ in rows]
        value = run_body(BODY_OF[asset])
        stored = _store().store(
            IOTarget(asset=asset, partition_key=partition, options=MappingProxyType({})), value
        )
        ready: list[str] = []
        with connection.transaction():
            ((step_id,),) = _execute(
                cursor,
                UPSERT_STEP,
                [
                    run_id,
                    asset,
                    partition,
                    started,
                    time.time(),
                    json.dumps(stored.as_metadata()),
                ],
            )
            if upstream_ids:
                _execute(
                    cursor,
                    "INSERT INTO floor_lineage (downstream_id, upstream_id) "
                    "SELECT %s, unnest(%s::bigint[]) ON CONFLICT DO NOTHING",
                    [step_id, upstream_ids],
                )
            if downstreams:
                released = _execute(
                    cursor,
                    "UPDATE floor_step SET remaining = remaining - 1 "
                    "WHERE run_id = %s AND partition_key = %s AND asset = ANY(%s) "
                    "RETURNING asset, remaining",
                    [run_id, partition, list(downstreams)],
                )
                ready = [name for name, remaining in released if remaining == 0]
    for name in ready:
        floor.apply_async(
            kwargs={"run_id": run_id, "asset": name, "partition": partition}, queue=FLOOR_QUEUE
        )
