from __future__ import annotations

from flowstone import asset


@asset(io_manager="objects", io_options={"bucket": "Not_A_Bucket", "colour": "red"})
def misplaced() -> int:
    return 1
