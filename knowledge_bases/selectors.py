"""Reads, with the access rule in one place: a KB is visible to its owner and to staff."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from knowledge_bases.models import Document, KnowledgeBase
from ragstudio.errors import NotFound


def knowledge_bases_visible_to(user: Any) -> QuerySet[KnowledgeBase]:
    qs = KnowledgeBase.objects.select_related("active_generation", "owner")
    if not getattr(user, "is_authenticated", False):
        return qs.none()
    if user.is_staff:
        return qs
    return qs.filter(owner=user)


def knowledge_base_get(*, slug: str, user: Any) -> KnowledgeBase:
    kb = knowledge_bases_visible_to(user).filter(slug=slug).first()
    if kb is None:
        # The same answer whether it does not exist or belongs to someone else.
        raise NotFound(f"knowledge base {slug!r} not found")
    return kb


def knowledge_bases_with_stats(user: Any) -> QuerySet[KnowledgeBase]:
    return knowledge_bases_visible_to(user).annotate(
        document_count=Count("documents", distinct=True),
        indexed_count=Count(
            "documents", filter=Q(documents__status=Document.Status.INDEXED), distinct=True
        ),
    )
