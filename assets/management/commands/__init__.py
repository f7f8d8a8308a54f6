"""``materialize``, ``backfill`` and ``runs``."""
