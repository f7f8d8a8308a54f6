"""Where a FlowStone worker's time and SQL go for one step (a profiling aid for issue 10).

    .venv/bin/python benchmarks/profile_step.py [--server postgres://postgres@127.0.0.1:5432]
        [--database flowstone_bench_profile] [--redis redis://127.0.0.1:6379/9] [--steps 200]
        [--shape single|batch|diamond] [--top 25] [--close-connection] [--sort cumulative|tottime]

Creates ``--database`` (dropped at the end), migrates it, creates runs of the benchmark graphs
(``benchmarks.flowstone_defs``) without publishing them, then executes their steps in this process
exactly as the Celery task does (``handle_step_message``, on one kept connection as FlowStone's
workers do; ``--close-connection`` closes it after each step, as Celery's Django fixup does when
``CELERY_DB_REUSE_MAX`` is unset, to price that). ``--top 0`` skips cProfile, for clean timings.
Prints the SQL statements of one step in order, the statement count per step, and the functions
with the most cumulative (or, with ``--sort tottime``, internal) time (cProfile). Released
downstream steps are published to ``--redis`` (database 9, flushed after).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run import (  # noqa: E402  # needs ROOT on sys.path when run as a script
    DEFAULT_REDIS,
    DEFAULT_SERVER,
    drop_database,
    flush_redis,
    recreate_database,
)
from benchmarks.workloads import assets_of, partition_keys  # noqa: E402

SQL_PREVIEW: Final = 150
SAMPLE_STATEMENTS: Final = 12


def main(argv: list[str] | None = None) -> int:
    """Profile ``--steps`` steps and print what they did."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--database", default="flowstone_bench_profile")
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--shape", choices=("single", "batch", "diamond"), default="single")
    parser.add_argument("--batch-size", type=int, default=15, help="steps per batch (batch)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--close-connection", action="store_true")
    parser.add_argument("--sort", choices=("cumulative", "tottime"), default="cumulative")
    args = parser.parse_args(argv)
    if not args.database.startswith("flowstone_bench"):
        parser.error("--database must start with flowstone_bench")
    recreate_database(args.server, args.database)
    data_dir = tempfile.mkdtemp(prefix="flowstone-bench-profile-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "flowstone.settings",
            "DATABASE_URL": f"{args.server}/{args.database}",
            "CELERY_BROKER_URL": args.redis,
            "FLOWSTONE_DEFINITIONS": "benchmarks.flowstone_defs",
            "FLOWSTONE_DATA_DIR": data_dir,
            "FLOWSTONE_LOG_LEVEL": "WARNING",
            "BENCH_SINGLE_PARTITIONS": str(args.steps),
            "BENCH_DIAMOND_PARTITIONS": str(max(args.steps // 10, 1)),
        }
    )
    import django  # noqa: PLC0415  # configured from the environment set just above
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415

    django.setup()
    try:
        call_command("migrate", verbosity=0)
        profile(
            args.shape if args.shape != "batch" else f"batch:{args.batch_size}",
            args.steps,
            args.top,
            close_connection=args.close_connection,
            sort=args.sort,
        )
    finally:
        connections.close_all()
        drop_database(args.server, args.database)
        flush_redis(args.redis)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def deliver(batch: list[Any], *, owner: str) -> list[Any]:
    """Handle the message a worker gets for ``batch``: a batch, or one step's; the outcomes."""
    from flowstone.execution.worker import (  # noqa: PLC0415
        handle_batch_message,
        handle_step_message,
    )

    first = batch[0]
    payload: dict[str, Any] = {"run_id": str(first.run_id), "asset": first.asset}
    if len(batch) > 1:
        payload["partitions"] = [step.partition_key for step in batch]
        return handle_batch_message((), payload, owner=owner, start_within=60)
    payload["partition"] = first.partition_key
    outcome = handle_step_message((), payload, owner=owner)
    return [] if outcome is None else [outcome]


def profile(shape: str, steps: int, top: int, *, close_connection: bool, sort: str) -> None:
    """Create the runs, run their steps under cProfile and an SQL recorder, print the results."""
    from django.db import close_old_connections, connection  # noqa: PLC0415

    from assets import services  # noqa: PLC0415
    from flowstone.api import RunOptions, _backfill_request, _planned_request  # noqa: PLC0415
    from flowstone.status import RunKind, StepStatus  # noqa: PLC0415

    pending: list[int] = []
    if shape.startswith(("single", "batch")):
        _, request = _backfill_request(
            "single_noop",
            None,
            RunOptions(),
            max_parallel=None,
            force=False,
            is_in_process=False,
        )
        run = services.create_run(request).run
        # A backfill's steps are created released (ADR 0033): ``ready`` does not list them.
        queued = services.steps_of_run(run.pk)
        pending += [step.pk for step in queued if step.status == StepStatus.QUEUED]
    else:
        target = assets_of("diamond", "noop")[-1]
        for key in partition_keys(max(steps // 10, 1)):
            _, request = _planned_request(
                target, key, RunOptions(), kind=RunKind.MATERIALIZE_ALL, is_in_process=False
            )
            pending += services.create_run(request).ready
    recorded: list[list[str]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:  # noqa: FBT001
        recorded[-1].append(sql)
        return execute(sql, params, many, context)

    profiler = cProfile.Profile()
    done = 0
    started = time.perf_counter()
    size = int(shape.partition(":")[2] or 1)
    while pending and done < steps:
        batch = [services.get_step(pk) for pk in pending[:size]]
        del pending[:size]
        close_old_connections()
        recorded.append([])
        if top:
            profiler.enable()
        with connection.execute_wrapper(record):
            outcomes = deliver(batch, owner=f"profile:{done}")
        if close_connection:
            connection.close()  # what Celery's Django fixup does without CELERY_DB_REUSE_MAX
        if top:
            profiler.disable()
        for outcome in outcomes:
            pending += outcome.end.ready
        done += len(batch)
    seconds = time.perf_counter() - started
    counts = Counter(round(len(statements) / size, 1) for statements in recorded)
    print(f"{done} steps ({shape}) in {seconds:.2f} s: {seconds / done * 1000:.1f} ms per step")
    print(f"statements per step (count: steps): {dict(sorted(counts.items()))}")
    sample = recorded[len(recorded) // 2]
    print(f"\nthe statements of a step in the middle ({len(sample)}):")
    for number, sql in enumerate(sample[:SAMPLE_STATEMENTS], 1):
        text = " ".join(sql.split())
        print(f"{number:>3}. {text[:SQL_PREVIEW]}{'...' if len(text) > SQL_PREVIEW else ''}")
    if top:
        print(f"\ncProfile, top {top} by cumulative time:")
        pstats.Stats(profiler).sort_stats(sort).print_stats(top)


if __name__ == "__main__":
    sys.exit(main())
