"""Approval requests for checkpoints, their state machine and the admin console."""
