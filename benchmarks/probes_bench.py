"""Time ``/health/`` and ``/metrics`` on 1,000,000 materializations (PostgreSQL).

    .venv/bin/python benchmarks/probes_bench.py [--server postgres://postgres@127.0.0.1:5432]
        [--database flowstone_probes] [--steps 1000000] [--runs 10000] [--requests 1000]

It drops and creates ``--database``, migrates it, fills ``--runs`` finished runs and ``--steps``
materializations over 50 assets with two ``INSERT ... SELECT generate_series`` statements, runs
``VACUUM ANALYZE`` and records one worker heartbeat. Then it times, through Django's test client
(the whole middleware stack):

- ``/health/``: the checks themselves (cache off) and a request served from the cache;
- ``/metrics``: the collections that tally the finished runs into ``StepTotals`` (each at most
  ``TALLY_PER_SCRAPE`` runs: after an upgrade, or a fill like this one), collections after them
  (cache off: the totals plus the steps of untallied runs), a request served from the cache, and,
  as the baseline in the same run, grouping the whole step table (what every collection did
  before the totals).

It prints the median and 95th percentile of each. A script, not a test; the database is dropped
at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.lineage_bench import (  # noqa: E402
    _filled_columns,  # the same NOT NULL filling as the lineage benchmark
    drop_database,
    set_up_django,
)

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_SERVER: Final = "postgres://postgres@127.0.0.1:5432"
DEFAULT_DATABASE: Final = "flowstone_probes"
ASSETS: Final = 50

RUNS_SQL: Final = """
INSERT INTO assets_run ({columns})
SELECT md5('run' || i)::uuid, 'backfill', '[]'::jsonb,
       CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'success' END,
       %s::int, %s::int, now() - make_interval(secs => i * 60),
       now() - make_interval(secs => i * 60 - 5),
       now() - make_interval(secs => i * 60 - 30 - i %% 600)
       {extra}
FROM generate_series(1, %s) AS i
"""
STEPS_SQL: Final = """
INSERT INTO assets_materialization ({columns})
SELECT md5('run' || (1 + i %% %s))::uuid, 'asset_' || (i %% {assets}), i::text,
       CASE WHEN i %% 97 = 0 THEN 'failed' ELSE 'success' END, 1,
       now() - make_interval(secs => i), now() - make_interval(secs => i),
       now() - make_interval(secs => i - 0.05),
       now() - make_interval(secs => i - 0.05 - (i %% 200) / 100.0)
       {extra}
FROM generate_series(1, %s) AS i
"""


def _fill(runs: int, steps: int) -> float:
    """Insert the runs and steps; return the seconds it took."""
    from django.db import connection  # noqa: PLC0415  # Django is set up by main()

    from assets.models import Materialization, Run  # noqa: PLC0415

    run_columns, run_extra = _filled_columns(
        Run,
        "id, kind, selection, status, steps_total, steps_succeeded, created_at, started_at, "
        "finished_at",
    )
    step_columns, step_extra = _filled_columns(
        Materialization,
        "run_id, asset, partition_key, status, attempt, created_at, queued_at, started_at, "
        "finished_at",
    )
    per_run = max(steps // runs, 1)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            RUNS_SQL.format(columns=run_columns, extra="".join(", %s" for _ in run_extra)),
            [per_run, per_run, *run_extra, runs],
        )
        cursor.execute(
            STEPS_SQL.format(
                columns=step_columns, assets=ASSETS, extra="".join(", %s" for _ in step_extra)
            ),
            [runs, *step_extra, steps],
        )
    elapsed = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE assets_run")
        cursor.execute("VACUUM ANALYZE assets_materialization")
    return elapsed


def _time(count: int, call: Callable[[], object]) -> list[float]:
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        durations.append((time.perf_counter() - started) * 1000)
    return durations


def _report(label: str, durations: list[float]) -> None:
    ordered = sorted(durations)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    print(
        f"{label:<44} n={len(ordered):<5} p50 {statistics.median(ordered):9.2f} ms"
        f"   p95 {p95:9.2f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    """Fill the tables, time both probes with and without their caches, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args(argv)

    set_up_django(args.server, args.database)
    from django.core.cache import cache  # noqa: PLC0415  # Django is set up now
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415
    from django.test import Client, override_settings  # noqa: PLC0415
    from django.test.utils import setup_test_environment  # noqa: PLC0415

    from assets import services  # noqa: PLC0415
    from assets.models import Materialization, Run  # noqa: PLC0415
    from assets.services import totals  # noqa: PLC0415

    try:
        call_command("migrate", verbosity=0)
        setup_test_environment()  # the test client's host name is allowed
        fill = _fill(args.runs, args.steps)
        print(f"filled {args.runs:,} runs and {args.steps:,} materializations in {fill:.1f} s")
        services.record_worker_heartbeat("bench@localhost")
        client = Client()

        def get(path: str, expected: int) -> Callable[[], object]:
            def call() -> None:
                response = client.get(path)
                if response.status_code != expected:
                    raise RuntimeError(f"{path} answered {response.status_code}")

            return call

        with override_settings(FLOWSTONE={"HEALTH_CACHE_SECONDS": 0}):
            _report("/health/, checked on every request", _time(100, get("/health/", 200)))
        cache.clear()
        _report(
            "/health/, from the cache (default 5 s)", _time(args.requests, get("/health/", 200))
        )
        with override_settings(FLOWSTONE={"METRICS_CACHE_SECONDS": 0}):
            catch_up: list[float] = []
            while Run.objects.filter(metrics_tallied=False).exists():
                catch_up += _time(1, get("/metrics", 200))
            _report("/metrics, while it tallies the backlog", catch_up)
            _report("/metrics, collected on every scrape", _time(20, get("/metrics", 200)))
        everything = Materialization.objects.all()
        _report(
            "baseline: grouping the whole step table",
            _time(3, lambda: totals.step_figures(everything)),
        )
        cache.clear()
        _report(
            "/metrics, from the cache (default 15 s)",
            _time(args.requests, get("/metrics", 200))[1:],  # the first one fills the cache
        )
    finally:
        connections.close_all()
        drop_database(args.server, args.database)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
