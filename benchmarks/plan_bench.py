"""One plan+enqueue measurement in a fresh process (started by ``run.py``; prints JSON).

    .venv/bin/python benchmarks/plan_bench.py ASSET MAX_PARALLEL

The environment (set by ``run.py``) points Django at the benchmark database and broker, and
``BENCH_PLAN_PARTITIONS`` sizes the assets ``plan_static`` / ``plan_daily`` of
``benchmarks.flowstone_defs``, routed to the ``bench_plan`` queue that no worker consumes.
Times ``flowstone.backfill_async(ASSET, max_parallel=...)`` from the call to its return (it
returns after the last message is published) and reports the messages in the queue, the SQL
statements the call sent, the RSS before the call and the peak RSS during the call (the peak is
reset just before it through ``/proc/self/clear_refs``, so start-up peaks do not count).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KIB: Final = 1024


def _status(field: str) -> int:
    """A size field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * KIB
    return 0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def main(argv: list[str]) -> int:
    """Time one backfill_async and print the figures."""
    asset, max_parallel = argv[0], int(argv[1]) or None
    import django  # noqa: PLC0415  # configured from the environment run.py sets
    import redis  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415

    django.setup()
    import flowstone  # noqa: PLC0415
    from benchmarks.flowstone_defs import PLAN_QUEUE  # noqa: PLC0415
    from flowstone.registry import get_registry  # noqa: PLC0415

    get_registry()
    statements = 0

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:  # noqa: FBT001
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    connection.ensure_connection()
    # Start and imports may have peaked higher than the call will: measure the call's own peak.
    peak_reset = reset_peak_rss()
    rss_before = _status("VmRSS")
    started = time.perf_counter()
    with connection.execute_wrapper(count):
        handle = flowstone.backfill_async(asset, max_parallel=max_parallel)
    seconds = time.perf_counter() - started
    client = redis.Redis.from_url(str(settings.CELERY_BROKER_URL))
    print(
        json.dumps(
            {
                "run_id": handle.run_id,
                "seconds": seconds,
                "published": int(client.llen(PLAN_QUEUE)),
                "statements": statements,
                "rss_before_bytes": rss_before,
                "peak_rss_bytes": _status("VmHWM")
                if peak_reset
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
