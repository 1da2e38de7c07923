"""Reads of generations: by number, the active one, the one a search reads."""

from __future__ import annotations

from django.db.models import QuerySet

from knowledge_bases.models import Generation, KnowledgeBase
from ragstudio.core.errors import Conflict, NotFound


def generation_get(*, kb: KnowledgeBase, number: int) -> Generation:
    generation = kb.generations.filter(number=number).first()
    if generation is None:
        raise NotFound(f"knowledge base {kb.slug!r} has no generation {number}")
    return generation


def generations_of(kb: KnowledgeBase) -> QuerySet[Generation]:
    """Every generation of the KB, newest first."""
    return kb.generations.order_by("-number")


def generations_searchable(kb: KnowledgeBase) -> QuerySet[Generation]:
    """The KB's generations whose files exist, newest first."""
    return generations_of(kb).filter(status__in=Generation.SEARCHABLE)


def active_generation(kb_id: int) -> Generation:
    kb = KnowledgeBase.objects.select_related("active_generation").get(pk=kb_id)
    if kb.active_generation is None:
        raise Conflict(f"knowledge base {kb.slug!r} has no active generation yet")
    return kb.active_generation


def generation_searchable_get(kb: KnowledgeBase, number: int | None) -> Generation:
    """The generation a search reads: the active one (None), or a numbered one that still
    has its files (building, ready, active or archived)."""
    if number is None:
        return active_generation(kb.pk)
    generation = Generation.objects.filter(knowledge_base=kb, number=number).first()
    if generation is None:
        raise NotFound(f"knowledge base {kb.slug!r} has no generation {number}")
    if generation.status not in Generation.SEARCHABLE:
        raise Conflict(
            f"generation {number} is {generation.status}: it cannot be searched",
            {"generation": number, "status": generation.status},
        )
    return generation
