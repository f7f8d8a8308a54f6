"""Schedules and sensors on Celery beat: tick history, sensor cursors, beat sync."""
