"""Management commands of the schedules app."""
