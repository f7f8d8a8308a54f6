"""Approval lifecycle signals, sent after the transaction that caused them commits.

Every signal is sent with ``sender=Approval`` and ``approval=<Approval>``; ``approval_decided``
also carries ``decision`` (``approved``, ``modified``, ``rejected``).
"""

from __future__ import annotations

from django.dispatch import Signal

approval_requested = Signal()
approval_decided = Signal()
approval_escalated = Signal()
approval_expired = Signal()
