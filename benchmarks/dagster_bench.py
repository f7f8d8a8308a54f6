"""Dagster on the benchmark graphs, in-process (run by ``run.py`` with the Dagster venv's Python).

    benchmarks/.dagster-venv/bin/python benchmarks/dagster_bench.py WORKLOAD PARTITIONS RUNS

``WORKLOAD`` is e.g. ``single-noop``; ``PARTITIONS`` the size of the static partition set the
assets are defined with (as in FlowStone); ``RUNS`` how many runs to time: one ``materialize``
call per partition (single: 1 asset, diamond: 10 assets) or per chain run (10 assets). Each run
uses the default in-process executor, a persistent local instance (SQLite run and event storage
in a temp dir) and the filesystem IO manager in that temp dir. Prints one JSON object:
materializations, seconds, request->start latencies (ms), CPU seconds and peak RSS.

Dagster is not a dependency of FlowStone: it is imported here only, dynamically, so the project's
type checker does not need it installed.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.workloads import (  # noqa: E402  # needs ROOT on sys.path when run as a script
    Workload,
    partition_keys,
    run_body,
)

KIB: Final = 1024
STEP_START: Final = "STEP_START"
STEP_SUCCESS: Final = "STEP_SUCCESS"
# Dagster's console logger at WARNING, like FlowStone's workers (no per-event log lines).
QUIET: Final = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def build_assets(dagster: Any, workload: Workload, partitions: int) -> list[Any]:
    """The workload's graph as Dagster assets (``deps`` only: no values are loaded)."""
    partitions_def = (
        dagster.StaticPartitionsDefinition(partition_keys(partitions))
        if workload.partitioned
        else None
    )
    built: list[Any] = []
    for name in workload.assets:

        def compute() -> dict[str, int]:
            return run_body(workload.body)

        compute.__name__ = name
        built.append(
            dagster.asset(
                name=name,
                deps=list(workload.upstreams[name]),
                partitions_def=partitions_def,
                code_version="1",
            )(compute)
        )
    return built


def latencies(instance: Any, run_id: str, upstreams: dict[str, tuple[str, ...]]) -> list[float]:
    """Per step: from the run's creation (root steps) or its last upstream's success, to start."""
    record = instance.get_run_record_by_id(run_id)
    created = record.create_timestamp.timestamp()
    starts: dict[str, float] = {}
    successes: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value == STEP_SUCCESS:
            successes[event.step_key] = entry.timestamp
    result: list[float] = []
    for step, started in starts.items():
        ready = max([created, *(successes[u] for u in upstreams.get(step, ()) if u in successes)])
        result.append((started - ready) * 1000)
    return result


def main(argv: list[str]) -> int:
    """Time ``RUNS`` in-process runs of the workload and print the figures as JSON."""
    name, partitions, runs = argv[0], int(argv[1]), int(argv[2])
    shape, body = name.split("-")
    workload = Workload(shape=shape, body=body, count=runs)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    dagster = importlib.import_module("dagster")
    with tempfile.TemporaryDirectory(prefix="flowstone-bench-dagster-") as temp:
        instance = dagster.DagsterInstance.local_temp(
            tempdir=temp, overrides={"telemetry": {"enabled": False}}
        )
        assets = build_assets(dagster, workload, partitions)
        resources = {"io_manager": dagster.FilesystemIOManager(base_dir=str(Path(temp) / "io"))}
        keys: list[str | None] = (
            list(partition_keys(runs)) if workload.partitioned else [None] * runs
        )
        # One warm-up run (imports, storage schema), not timed.
        options = {"instance": instance, "resources": resources, "run_config": QUIET}
        dagster.materialize(assets, partition_key=keys[0], **options)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        started = time.perf_counter()
        samples: list[float] = []
        run_ids: list[str] = []
        for key in keys:
            result = dagster.materialize(assets, partition_key=key, **options)
            run_ids.append(result.run_id)
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu_before
        for run_id in run_ids:
            samples.extend(latencies(instance, run_id, workload.upstreams))
    print(
        json.dumps(
            {
                "materializations": workload.steps,
                "seconds": seconds,
                "latencies_ms": samples,
                "cpu_seconds": cpu,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB,
                "version": str(dagster.__version__),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
