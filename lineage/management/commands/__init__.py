"""The ``lineage`` command."""
