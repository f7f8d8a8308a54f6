"""Lineage edges between materializations, and the audit log."""
