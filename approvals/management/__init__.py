"""Management commands of the approvals app."""
