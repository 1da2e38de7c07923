"""django-q2 tasks of knowledge bases (safe to run twice: delivery is at least once)."""

from __future__ import annotations

from knowledge_bases.services import generations_gc_all


def collect_generations() -> dict[str, object]:
    """The scheduled GC of every knowledge base's generations."""
    return generations_gc_all()
