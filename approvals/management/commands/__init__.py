"""The ``approvals`` command."""
