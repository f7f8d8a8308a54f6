"""``manage.py sync_schedules``."""
