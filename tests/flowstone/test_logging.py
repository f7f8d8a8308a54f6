"""Every log record carries the step fields, in plain and JSON formats."""

from __future__ import annotations

import json
import logging

from pythonjsonlogger.json import JsonFormatter

from flowstone.context import StepLogger
from flowstone.logging import StepFieldsFilter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "flowstone.test", logging.INFO, __file__, 1, "hello %s", ("x",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_missing_step_fields_become_none() -> None:
    record = _record(run_id="r1")
    assert StepFieldsFilter().filter(record)
    assert (record.run_id, record.asset, record.partition) == ("r1", None, None)  # type: ignore[attr-defined]


def test_json_records_name_the_step() -> None:
    formatter = JsonFormatter("%(message)s %(run_id)s %(asset)s %(partition)s")
    record = _record(run_id="r1", asset="orders", partition="d:2025-12-01")
    StepFieldsFilter().filter(record)
    assert json.loads(formatter.format(record)) == {
        "message": "hello x",
        "run_id": "r1",
        "asset": "orders",
        "partition": "d:2025-12-01",
        "event": None,
    }


def test_the_asset_context_logger_adds_the_step_fields() -> None:
    logger = StepLogger(
        logging.getLogger("flowstone.asset"), {"run_id": "r", "asset": "a", "partition": "s:p"}
    )
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logging.getLogger("flowstone.asset").addHandler(handler)
    try:
        logger.warning("step says %s", "hi", extra={"rows": 3})
    finally:
        logging.getLogger("flowstone.asset").removeHandler(handler)
    (record,) = records
    assert (record.run_id, record.asset, record.partition, record.rows) == ("r", "a", "s:p", 3)  # type: ignore[attr-defined]
