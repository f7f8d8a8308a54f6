"""What the lease heartbeat costs the database, at the default lease and at the old one.

    .venv/bin/python benchmarks/heartbeat_bench.py [--server postgres://postgres@127.0.0.1:5432]
        [--database flowstone_heartbeat] [--running 200] [--renewals 5000]

A running step renews its lease every third of ``STEP_LEASE_SECONDS``: one ``UPDATE`` of its
row. This script drops and creates ``--database``, migrates it, claims ``--running`` steps (as
that many busy worker processes would hold), then times ``assets.services.renew_lease`` (the
function the heartbeat thread calls) on random running steps, and a ``SELECT 1`` round trip on
the same connection as the baseline measured in the same run. It prints the cost of one renewal
and what the fleet's renewals cost the database per second at a 15 s lease (the default since
issue 15) and at the 60 s lease it replaced. A script, not a test; the database is dropped at
the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.lineage_bench import drop_database, set_up_django  # noqa: E402
from flowstone import asset  # noqa: E402  # needs ROOT on sys.path when run as a script
from flowstone.partitions import StaticPartitions  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_SERVER: Final = "postgres://postgres@127.0.0.1:5432"
DEFAULT_DATABASE: Final = "flowstone_heartbeat"
DEFAULT_RUNNING: Final = 200
DEFAULT_RENEWALS: Final = 5000
LEASES: Final = (15, 60)
WARMUP: Final = 200
SEED: Final = 15


@asset(partitions=StaticPartitions(keys=tuple(f"k{n}" for n in range(10_000))))
def hb_step() -> int:
    """The asset whose steps are held running."""
    return 1


def _claim_running(count: int) -> list[tuple[int, str]]:
    """Create a worker run of ``count`` steps and claim them all: ``(step id, owner)`` each."""
    from assets import services  # noqa: PLC0415  # needs Django set up
    from flowstone.status import RunKind  # noqa: PLC0415

    created = services.create_run(
        services.RunRequest(
            kind=RunKind.BACKFILL,
            selection=["hb_step"],
            steps=[
                services.StepRequest(asset="hb_step", partition_key=f"s:k{n}") for n in range(count)
            ],
        )
    )
    held = []
    for step_id in created.ready:
        owner = f"bench:{step_id}"
        if services.claim_step(step_id, owner) is None:
            raise RuntimeError(f"could not claim step {step_id}")
        held.append((step_id, owner))
    return held


def _time(calls: int, call: Callable[[], None]) -> list[float]:
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main(argv: list[str] | None = None) -> int:
    """Hold steps running, time renewals against a round trip, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--running", type=int, default=DEFAULT_RUNNING)
    parser.add_argument("--renewals", type=int, default=DEFAULT_RENEWALS)
    args = parser.parse_args(argv)

    set_up_django(args.server, args.database)
    from django.core.management import call_command  # noqa: PLC0415  # Django is set up now
    from django.db import connection, connections  # noqa: PLC0415

    from assets import services  # noqa: PLC0415

    try:
        call_command("migrate", verbosity=0)
        held = _claim_running(args.running)
        rng = random.Random(SEED)  # noqa: S311  # a reproducible choice of steps, not secrets

        def renew() -> None:
            step_id, owner = rng.choice(held)
            if not services.renew_lease(step_id, owner):
                raise RuntimeError(f"step {step_id} lost its lease during the benchmark")

        def round_trip() -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()

        baseline = _time(args.renewals, round_trip)
        renewals = _time(args.renewals, renew)
        base_ms = statistics.median(baseline)
        renew_ms = statistics.median(renewals)
        p99 = statistics.quantiles(renewals, n=100)[98]
        print(f"{args.running} steps held running; {args.renewals} timed calls each")
        print(f"SELECT 1 round trip (baseline)   median {base_ms:.3f} ms")
        print(
            f"renew_lease                      median {renew_ms:.3f} ms, p99 {p99:.3f} ms "
            f"({renew_ms / base_ms:.1f}x the round trip)"
        )
        print(f"\n{'lease':>6} {'renew every':>12} {'renewals/s':>11} {'ms/s':>8}")
        for lease in LEASES:
            per_second = args.running / (lease / 3)
            print(
                f"{lease:>5}s {lease / 3:>11.1f}s {per_second:>11.1f} {per_second * renew_ms:>8.1f}"
            )
        print(
            f"\nms/s: milliseconds per second spent renewing the leases of {args.running} "
            "running steps, measured from Python (statement and ORM; one core has 1,000)"
        )
    finally:
        connections.close_all()
        drop_database(args.server, args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
