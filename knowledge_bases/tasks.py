"""django-q2 tasks of knowledge bases (safe to run twice: delivery is at least once)."""

from __future__ import annotations

from knowledge_bases.services import audit_events_prune, generations_gc_all


def collect_generations() -> dict[str, object]:
    """The scheduled GC of every knowledge base's generations."""
    return generations_gc_all()


def prune_audit_events() -> int:
    """The daily deletion of audit events past RAGSTUDIO_AUDIT_RETENTION_DAYS."""
    return audit_events_prune()
