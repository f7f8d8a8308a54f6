"""Pin the public API of flowstone.scheduling."""

from __future__ import annotations

import flowstone.scheduling


def test_scheduling_all() -> None:
    assert flowstone.scheduling.__all__ == [
        "DEFAULT_MAX_CATCH_UP_TICKS",
        "DEFAULT_SENSOR_INTERVAL_SECONDS",
        "MAX_ARRIVALS_PER_POLL",
        "CatchUpPlan",
        "CatchUpPolicy",
        "CronFields",
        "FileArrival",
        "MaterializationEvent",
        "MaterializationFeed",
        "Notify",
        "RunRequest",
        "RunStatusEvent",
        "RunStatusFeed",
        "S3Arrival",
        "ScheduleDefinition",
        "ScheduleSpec",
        "ScheduleTick",
        "SensorContext",
        "SensorDefinition",
        "SensorResult",
        "SensorSpec",
        "SkipReason",
        "asset_sensor",
        "file_sensor",
        "parse_cron",
        "previous_window",
        "run_status_sensor",
        "s3_sensor",
        "schedule",
        "schedule_of",
        "sensor",
        "sensor_of",
    ]
    for name in flowstone.scheduling.__all__:
        assert getattr(flowstone.scheduling, name) is not None


def test_the_engine_package_imports_no_django_app() -> None:
    import ast  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    apps = {"assets", "lineage", "approvals", "schedules", "demo"}
    for path in Path(flowstone.scheduling.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in apps, (path.name, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in apps, (path.name, alias.name)
