"""The audit trail as staff read it, and its retention."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from knowledge_bases.models import AuditEvent


def audit_events_prune(*, now: datetime | None = None) -> int:
    """Delete events older than RAGSTUDIO_AUDIT_RETENTION_DAYS; how many went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.AUDIT_RETENTION_DAYS)
    deleted, _ = AuditEvent.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def audit_events_filtered(
    *,
    action: str = "",
    actor: str = "",
    kb: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Events newest first: ``action`` exact or a family ("document", "generation",
    "auth"...), ``actor`` and ``kb`` by name (exact, case-insensitive), a time range."""
    events: QuerySet[AuditEvent] = AuditEvent.objects.all()
    if action:
        events = (
            events.filter(action=action)
            if "." in action
            else events.filter(action__startswith=f"{action}.")
        )
    if actor:
        events = events.filter(actor_name__iexact=actor)
    if kb:
        events = events.filter(kb_slug__iexact=kb)
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events


def audit_families() -> list[tuple[str, Any]]:
    """The actions, for a filter's choices."""
    return list(AuditEvent.Action.choices)
