"""Malformed broker messages, shared by the poison tests and the fault suite.

``REDIS_POISON`` are items for the step queue's Redis list, as ``redis-cli LPUSH`` would push them;
each ``Poison`` says how to find its ``RejectedMessage`` row.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

HUGE = 5 * 1024 * 1024


@dataclass(frozen=True)
class Poison:
    """One malformed message and how to find its ``RejectedMessage`` row."""

    name: str
    item: bytes
    marker: str
    """Text in the row's payload or task id; a marker starting with ``=`` is the whole payload."""


def envelope(
    body: bytes,
    *,
    headers: Any,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    **properties: Any,
) -> bytes:
    """A queue item shaped like kombu's Redis envelope; ``properties`` override its defaults."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "flowstone", "routing_key": "flowstone"},
                "priority": 0,
                "delivery_mode": 2,
                **properties,
            },
        }
    ).encode()


def task_headers(marker: str) -> dict[str, str]:
    """The headers of a Celery task message for ``flowstone.run_step`` with id ``marker``."""
    return {"lang": "py", "task": "flowstone.run_step", "id": marker, "root_id": marker}


def step_body(marker: str) -> bytes:
    """A Celery message body (args, kwargs, embed) whose kwargs carry ``marker``."""
    return json.dumps([[], {"marker": marker}, {}]).encode()


REDIS_POISON = [
    Poison("not json", b"not json poison-r01", "poison-r01"),
    Poison("empty object", b"{}", "={}"),
    Poison("a JSON list", b'[1, 2, "poison-r03"]', "poison-r03"),
    Poison("invalid UTF-8", b"\xff\xfe poison-r04", "poison-r04"),
    Poison(
        "no properties",
        json.dumps({"body": "", "headers": {"id": "poison-r05"}}).encode(),
        "poison-r05",
    ),
    Poison(
        "no delivery tag or info",
        envelope(b"[]", headers={"id": "poison-r06"}, delivery_tag=None, delivery_info=None),
        "poison-r06",
    ),
    Poison(
        "body not base64",
        json.dumps(
            {
                "body": "*** not base64 ***",
                "headers": {"id": "poison-r07"},
                "properties": {
                    "body_encoding": "base64",
                    "delivery_tag": "t7",
                    "delivery_info": {"exchange": "flowstone", "routing_key": "flowstone"},
                },
            }
        ).encode(),
        "poison-r07",
    ),
    Poison(
        "unknown body encoding",
        envelope(b"[]", headers={"id": "poison-r08"}, body_encoding="rot13"),
        "poison-r08",
    ),
    Poison(
        "wrong content type",
        envelope(
            step_body("x"), headers=task_headers("poison-r09"), content_type="application/x-bogus"
        ),
        "poison-r09",
    ),
    Poison(
        "unknown content encoding",
        envelope(step_body("x"), headers=task_headers("poison-r10"), content_encoding="x-bogus"),
        "poison-r10",
    ),
    Poison(
        "task message without an id",
        envelope(step_body("poison-r11"), headers={"lang": "py", "task": "flowstone.run_step"}),
        "poison-r11",
    ),
    Poison("body not a list", envelope(b"42", headers=task_headers("poison-r12")), "poison-r12"),
    Poison("body not JSON", envelope(b"{{{", headers=task_headers("poison-r13")), "poison-r13"),
    Poison("huge", b"poison-r14" + b"x" * HUGE, "poison-r14"),
]
