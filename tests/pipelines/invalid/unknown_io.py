from __future__ import annotations

from flowstone import asset


@asset(io_manager="nowhere")
def lost() -> int:
    return 1
