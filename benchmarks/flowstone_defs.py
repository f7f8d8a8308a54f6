"""FlowStone asset definitions for ``benchmarks/run.py`` (``FLOWSTONE_DEFINITIONS``).

The graphs come from ``benchmarks.workloads``; partition counts from the environment, so the
harness and its workers agree: ``BENCH_SINGLE_PARTITIONS``, ``BENCH_DIAMOND_PARTITIONS`` and
``BENCH_PLAN_PARTITIONS`` (the assets ``plan_static`` and ``plan_daily`` of the plan/enqueue
measurement, routed to the ``bench_plan`` queue that no worker consumes).

With ``BENCH_PROBE_DIR`` set (worker processes only), every connection Django opens is counted
and gets an ``execute_wrapper`` that counts statements, so the harness can report SQL statements
and connections per materialization (``BENCH_LOG_SQL=1`` also records each statement's text as a
probe event, for debugging); a ready file tells the harness the worker is up.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Any, Final

from celery.signals import worker_ready
from django.db.backends.signals import connection_created

from benchmarks import probes
from benchmarks.workloads import (
    BODIES,
    SHAPES,
    assets_of,
    partition_keys,
    run_body,
    upstreams_of,
)
from flowstone import asset
from flowstone.partitions import DailyPartitions, StaticPartitions

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.backends.base.base import BaseDatabaseWrapper

    from flowstone.partitions.base import PartitionsDefinition

PLAN_QUEUE: Final = "bench_plan"
PLAN_START: Final = dt.date(1800, 1, 1)
WARMUP_PARTITIONS: Final = 16
LOG_SQL: Final = bool(os.environ.get("BENCH_LOG_SQL"))
LOG_SQL_PREVIEW: Final = 200


def _count(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


SINGLE = StaticPartitions(keys=partition_keys(_count("BENCH_SINGLE_PARTITIONS", 100)))
DIAMOND = StaticPartitions(keys=partition_keys(_count("BENCH_DIAMOND_PARTITIONS", 100)))
PLAN_PARTITIONS: Final = _count("BENCH_PLAN_PARTITIONS", 10)
WARMUP = StaticPartitions(keys=partition_keys(WARMUP_PARTITIONS))


def _define(
    name: str,
    body: str,
    deps: tuple[str, ...],
    partitions: PartitionsDefinition | None,
    **extra: Any,
) -> None:
    """Register one benchmark asset in this module's globals (the definitions module)."""

    def compute() -> dict[str, int]:
        return run_body(body)

    compute.__name__ = compute.__qualname__ = name
    compute.__doc__ = f"Benchmark asset {name} ({body})."
    globals()[name] = asset(
        name=name, deps=list(deps), partitions=partitions, code_version="1", **extra
    )(compute)


for _shape in SHAPES:
    for _body in BODIES:
        _ups = upstreams_of(_shape, _body)
        _parts = {"single": SINGLE, "diamond": DIAMOND}.get(_shape)
        for _name in assets_of(_shape, _body):
            _define(_name, _body, _ups[_name], _parts)
_define("warmup", "noop", (), WARMUP)
_define(
    "plan_static",
    "noop",
    (),
    StaticPartitions(keys=partition_keys(PLAN_PARTITIONS)),
    queue=PLAN_QUEUE,
)
_define(
    "plan_daily",
    "noop",
    (),
    DailyPartitions(start=PLAN_START, end=PLAN_START + dt.timedelta(days=PLAN_PARTITIONS)),
    queue=PLAN_QUEUE,
)


def _counting_wrapper(
    execute: Callable[..., Any],
    sql: str,
    params: Any,
    many: bool,  # noqa: FBT001  # Django's execute_wrapper signature
    context: dict[str, Any],
) -> Any:
    probes.count("sql")
    if LOG_SQL:
        probes.record_event(pid=os.getpid(), sql=" ".join(sql.split())[:LOG_SQL_PREVIEW])
    return execute(sql, params, many, context)


def _on_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:  # noqa: ARG001
    probes.count("connections")
    if _counting_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_counting_wrapper)


def _on_ready(**kwargs: Any) -> None:  # noqa: ARG001
    probes.mark_ready()


if os.environ.get(probes.PROBE_DIR_ENV):
    connection_created.connect(_on_connection, dispatch_uid="benchmarks.count_connections")
    worker_ready.connect(_on_ready, dispatch_uid="benchmarks.worker_ready", weak=False)
