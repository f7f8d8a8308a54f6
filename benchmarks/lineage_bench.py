"""Time the lineage queries on a synthetic graph of 1,000,000 lineage edges (PostgreSQL).

    .venv/bin/python benchmarks/lineage_bench.py [--server postgres://postgres@127.0.0.1:5432]
        [--database flowstone_bench] [--edges 1000000] [--repeat 50] [--keep]

It drops and creates the database ``--database`` on ``--server``, migrates it, loads a synthetic
history with ``COPY``, runs ``ANALYZE``, then times ``lineage.queries`` (the public functions,
start lookup included) on random starts and prints the median and 95th percentile of each. The
database is dropped at the end unless ``--keep`` is given. A script, not a test.

The synthetic pipeline, defined in this module and used as the registry (``__main__``):

- 12 layers of 8 daily assets (``l00_a0`` ... ``l11_a7``); each asset above layer 0 depends on
  3 assets of the layer below, so a day's first run records 264 edges.
- Every day is run twice: once in full, then layers 0..k again (k varies by day), each step
  consuming the latest success of its upstreams, so the second run supersedes the first for the
  lower layers and leaves the upper layers of the first run stale.
- 4 weekly assets, each reading two top-layer assets over the week's 7 days (14 edges each).

Days are added until the edge table holds exactly ``--edges`` rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flowstone import asset  # noqa: E402  # needs ROOT on sys.path when run as a script
from flowstone.partitions import (  # noqa: E402
    DailyPartitions,
    TimeWindowPartitionMapping,
    WeeklyPartitions,
    encode_partition_key,
)

if TYPE_CHECKING:
    from collections.abc import Callable

LAYERS: Final = 12
WIDTH: Final = 8
DEP_OFFSETS: Final = (0, 1, 3)
WEEKLY_ASSETS: Final = 4
DAYS_PER_WEEK: Final = 7
FIRST_DAY: Final = dt.date(2019, 1, 7)  # a Monday, so weeks line up with days
EPOCH: Final = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
DEFAULT_SERVER: Final = "postgres://postgres@127.0.0.1:5432"
DEFAULT_DATABASE: Final = "flowstone_bench"
DEFAULT_EDGES: Final = 1_000_000
DEFAULT_REPEAT: Final = 50
DEPTH: Final = 10
WARMUP: Final = 5
TARGET_MS: Final = 100.0
SEED: Final = 20251201
PERCENTILE_95: Final = 18  # index of the 95th percentile in statistics.quantiles(n=20)
SUCCESS: Final = "success"

DAILY = DailyPartitions(start=FIRST_DAY)
WEEKLY = WeeklyPartitions(start=FIRST_DAY)


def asset_name(layer: int, index: int) -> str:
    """The synthetic daily asset at ``layer``, position ``index``."""
    return f"l{layer:02d}_a{index}"


def deps_of(layer: int, index: int) -> list[str]:
    """The upstream assets of a daily asset above layer 0."""
    return [asset_name(layer - 1, (index + offset) % WIDTH) for offset in DEP_OFFSETS]


def weekly_name(index: int) -> str:
    """The synthetic weekly asset ``index``."""
    return f"weekly_{index}"


def weekly_deps(index: int) -> list[str]:
    """The two top-layer assets a weekly asset reads over its week."""
    return [asset_name(LAYERS - 1, index), asset_name(LAYERS - 1, index + WEEKLY_ASSETS)]


def _define(name: str, **options: Any) -> None:
    """Register one synthetic asset in this module (the benchmark's definitions module)."""

    def compute() -> None:
        """A synthetic asset; the benchmark never runs it."""

    compute.__name__ = compute.__qualname__ = name
    globals()[name] = asset(name=name, code_version="1", **options)(compute)


for _layer in range(LAYERS):
    for _index in range(WIDTH):
        _define(
            asset_name(_layer, _index),
            deps=deps_of(_layer, _index) if _layer else [],
            partitions=DAILY,
        )
for _index in range(WEEKLY_ASSETS):
    _define(
        weekly_name(_index),
        deps=weekly_deps(_index),
        partitions=WEEKLY,
        partition_mappings=dict.fromkeys(weekly_deps(_index), TimeWindowPartitionMapping()),
    )


@dataclass
class Generator:
    """Produces the rows of runs, materializations and edges, day by day."""

    edge_limit: int
    next_id: int = 1
    runs: list[tuple[Any, ...]] = field(default_factory=list)
    materializations: list[tuple[Any, ...]] = field(default_factory=list)
    edges: list[tuple[Any, ...]] = field(default_factory=list)
    first_runs: dict[tuple[str, str], int] = field(default_factory=dict)
    top_of_week: list[dict[str, int]] = field(default_factory=list)

    def _run(self) -> uuid.UUID:
        run_id = uuid.UUID(int=len(self.runs) + 1)
        at = EPOCH + dt.timedelta(seconds=self.next_id)
        self.runs.append(
            (run_id, "materialize_all", "[]", SUCCESS, "bench", False, 0, 0, at, at, at)
        )
        return run_id

    def _step(
        self, run_id: uuid.UUID, name: str, key: str, inputs: list[tuple[int, str, str]]
    ) -> int:
        pk = self.next_id
        self.next_id += 1
        at = EPOCH + dt.timedelta(seconds=pk)
        self.materializations.append(
            (pk, run_id, name, key, SUCCESS, 1, "1", 0, 0, "", at, at, at, at, "{}")
        )
        for upstream_id, upstream_asset, upstream_key in inputs:
            if len(self.edges) < self.edge_limit:
                self.edges.append((pk, upstream_id, name, key, upstream_asset, upstream_key, at))
        return pk

    def add_day(self, day_number: int) -> None:
        """Two runs of one day (the second re-runs layers 0..k) and, on Sundays, the weeklies."""
        day = FIRST_DAY + dt.timedelta(days=day_number)
        key = encode_partition_key(day)
        latest: dict[str, int] = {}
        for rerun_layers in (LAYERS, 1 + (day_number * 7) % LAYERS):
            run_id = self._run()
            for layer in range(rerun_layers):
                for index in range(WIDTH):
                    name = asset_name(layer, index)
                    inputs = (
                        [(latest[dep], dep, key) for dep in deps_of(layer, index)] if layer else []
                    )
                    made = self._step(run_id, name, key, inputs)
                    self.first_runs.setdefault((name, key), made)
                    latest[name] = made
        self.top_of_week.append(
            {asset_name(LAYERS - 1, i): latest[asset_name(LAYERS - 1, i)] for i in range(WIDTH)}
        )
        if day.weekday() == DAYS_PER_WEEK - 1:
            week = day - dt.timedelta(days=DAYS_PER_WEEK - 1)
            week_key = encode_partition_key(week)
            run_id = self._run()
            for index in range(WEEKLY_ASSETS):
                inputs = [
                    (top[dep], dep, encode_partition_key(week + dt.timedelta(days=offset)))
                    for offset, top in enumerate(self.top_of_week)
                    for dep in weekly_deps(index)
                ]
                self._step(run_id, weekly_name(index), week_key, inputs)
            self.top_of_week = []


RUN_COLUMNS: Final = (
    "id, kind, selection, status, requested_by, is_in_process, steps_total, steps_pending, "
    "created_at, started_at, finished_at"
)
MATERIALIZATION_COLUMNS: Final = (
    "id, run_id, asset, partition_key, status, attempt, code_version, remaining_upstreams, "
    "recoveries, lease_owner, created_at, queued_at, started_at, finished_at, metadata"
)
EDGE_COLUMNS: Final = (
    "downstream_id, upstream_id, downstream_asset, downstream_partition_key, upstream_asset, "
    "upstream_partition_key, created_at"
)


def recreate_database(server: str, name: str) -> None:
    """Drop ``name`` if it exists and create it empty."""
    import psycopg  # noqa: PLC0415  # only the script needs a second, server-level connection

    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')


def set_up_django(server: str, name: str) -> None:
    """Create database ``name`` afresh on ``server`` and set Django up on it.

    The running script (``__main__``) is the definitions module, and its data directory is a new
    temporary one. Migrating is left to the caller (some time it).
    """
    recreate_database(server, name)
    os.environ["DATABASE_URL"] = f"{server}/{name}"
    os.environ["FLOWSTONE_DEFINITIONS"] = "__main__"
    os.environ["FLOWSTONE_DATA_DIR"] = tempfile.mkdtemp(prefix="flowstone-bench-")
    os.environ["DJANGO_SETTINGS_MODULE"] = "flowstone.settings"
    import django  # noqa: PLC0415  # configured from the environment set just above

    django.setup()


def drop_database(server: str, name: str) -> None:
    """Drop ``name`` (Django's connections must be closed first)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _filled_columns(model: Any, given: str) -> tuple[str, tuple[Any, ...]]:
    """The COPY column list: ``given``, then every other NOT NULL column with its model default.

    Columns other issues add to these models later are filled the way Django would fill them,
    so the benchmark keeps loading.
    """
    from django.db import connection  # noqa: PLC0415  # Django is set up by main()

    named = {column.strip() for column in given.split(",")}
    extra = [
        field
        for field in model._meta.concrete_fields  # noqa: SLF001  # Django's documented model API
        if field.column not in named and not field.null and not field.db_returning
    ]
    columns = ", ".join([given, *(field.column for field in extra)])
    values = tuple(field.get_db_prep_save(field.get_default(), connection) for field in extra)
    return columns, values


def load(edge_limit: int) -> tuple[int, int, int, Generator]:
    """Generate the history and COPY it in; return the row counts and the generator."""
    from django.db import connection  # noqa: PLC0415  # Django is set up by main()

    from assets.models import Materialization, Run  # noqa: PLC0415
    from lineage.models import LineageEdge  # noqa: PLC0415

    generator = Generator(edge_limit=edge_limit)
    day_number = 0
    while len(generator.edges) < edge_limit:
        generator.add_day(day_number)
        day_number += 1
    with connection.cursor() as cursor:
        raw = cursor.cursor
        for model, given, rows in (
            (Run, RUN_COLUMNS, generator.runs),
            (Materialization, MATERIALIZATION_COLUMNS, generator.materializations),
            (LineageEdge, EDGE_COLUMNS, generator.edges),
        ):
            columns, defaults = _filled_columns(model, given)
            table = connection.ops.quote_name(model._meta.db_table)  # noqa: SLF001
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row + defaults)
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('assets_materialization', 'id'), %s)",
            [generator.next_id],
        )
        cursor.execute("ANALYZE")
    return len(generator.runs), len(generator.materializations), len(generator.edges), generator


@dataclass(frozen=True)
class Case:
    """One timed query: a name and a function of a random generator returning a result size."""

    name: str
    call: Callable[[random.Random], int]


def cases(generator: Generator, days: int) -> list[Case]:
    """The queries to time, each at depth <= ``DEPTH``, from random starts."""
    from lineage import queries  # noqa: PLC0415  # needs Django set up

    weeks = days // DAYS_PER_WEEK
    last_day = days - 2  # the last generated day may have been cut short at the edge limit

    def day(rng: random.Random) -> dt.date:
        return FIRST_DAY + dt.timedelta(days=rng.randrange(last_day))

    def week(rng: random.Random) -> dt.date:
        return FIRST_DAY + dt.timedelta(weeks=rng.randrange(weeks - 1))

    def top(rng: random.Random) -> str:
        return asset_name(LAYERS - 1, rng.randrange(WIDTH))

    def bottom(rng: random.Random) -> str:
        return asset_name(0, rng.randrange(WIDTH))

    def upstream_top(rng: random.Random) -> int:
        return len(queries.upstream(top(rng), day(rng), DEPTH).nodes)

    def upstream_weekly(rng: random.Random) -> int:
        name = weekly_name(rng.randrange(WEEKLY_ASSETS))
        return len(queries.upstream(name, week(rng), DEPTH).nodes)

    def downstream_latest(rng: random.Random) -> int:
        return len(queries.downstream(bottom(rng), day(rng), DEPTH).nodes)

    def downstream_first_run(rng: random.Random) -> int:
        name = bottom(rng)
        first = generator.first_runs[(name, encode_partition_key(day(rng)))]
        return len(queries.downstream(name, depth=DEPTH, materialization_id=first).nodes)

    def impact_bottom(rng: random.Random) -> int:
        return len(queries.impact(bottom(rng), day(rng), DEPTH).stale)

    def staleness_top(rng: random.Random) -> int:
        return len(queries.staleness(top(rng), day(rng)).causes)

    return [
        Case("upstream   top layer, depth 10", upstream_top),
        Case("upstream   weekly, depth 10", upstream_weekly),
        Case("downstream bottom layer (latest), depth 10", downstream_latest),
        Case("downstream bottom layer (first run, by id), depth 10", downstream_first_run),
        Case("impact     bottom layer, depth 10", impact_bottom),
        Case("staleness  top layer (all inputs)", staleness_top),
    ]


def time_case(case: Case, repeat: int, rng: random.Random) -> tuple[float, float, float]:
    """Median and p95 in milliseconds, and the mean result size, over ``repeat`` random starts."""
    for _ in range(WARMUP):
        case.call(rng)
    timings: list[float] = []
    sizes: list[int] = []
    for _ in range(repeat):
        started = time.perf_counter()
        sizes.append(case.call(rng))
        timings.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(timings, n=20)[PERCENTILE_95]
    return statistics.median(timings), p95, statistics.fmean(sizes)


def main(argv: list[str] | None = None) -> int:
    """Build the graph, time the queries, print the figures; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--edges", type=int, default=DEFAULT_EDGES)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    args = parser.parse_args(argv)

    set_up_django(args.server, args.database)
    from django.core.management import call_command  # noqa: PLC0415  # Django is set up now
    from django.db import connections  # noqa: PLC0415

    try:
        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        migrated = time.perf_counter()
        runs, materializations, edges, generator = load(args.edges)
        loaded = time.perf_counter()
        days = len({key for _, key in generator.first_runs})
        print(
            f"database {args.database}: {runs:,} runs, {materializations:,} materializations, "
            f"{edges:,} lineage edges over {days:,} days"
        )
        print(
            f"migrate {migrated - started:.1f} s, generate + COPY + ANALYZE "
            f"{loaded - migrated:.1f} s"
        )
        print(f"\n{'query':<52} {'median ms':>10} {'p95 ms':>10} {'avg nodes':>10}")
        rng = random.Random(SEED)  # noqa: S311  # reproducible sample of starts, not secrets
        missed = False
        for case in cases(generator, days):
            median, p95, size = time_case(case, args.repeat, rng)
            missed = missed or p95 > TARGET_MS
            print(f"{case.name:<52} {median:>10.2f} {p95:>10.2f} {size:>10.1f}")
        print(
            f"\n{args.repeat} random starts each after {WARMUP} warm-up calls; "
            f"target: p95 under {TARGET_MS:.0f} ms"
        )
    finally:
        connections.close_all()
        if not args.keep:
            drop_database(args.server, args.database)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
