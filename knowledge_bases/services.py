"""Writes to knowledge bases (their generations change in ``lifecycle``)."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction

from knowledge_bases.build_settings import build_settings_resolve
from knowledge_bases.models import KnowledgeBase
from ragstudio.errors import Conflict, ValidationError

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


@transaction.atomic
def knowledge_base_create(
    *,
    slug: str,
    name: str,
    owner: Any = None,
    description: str = "",
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
) -> KnowledgeBase:
    slug = (slug or "").strip().lower()
    if not SLUG.match(slug):
        raise ValidationError(
            "slug must be 1-64 lowercase letters, digits or hyphens, not starting or ending "
            "with a hyphen",
            {"field": "slug"},
        )
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationError("name must be 1 to 200 characters", {"field": "name"})
    built = build_settings_resolve(
        embedder=embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap
    )
    if KnowledgeBase.objects.filter(slug=slug).exists():
        raise Conflict(f"a knowledge base with slug {slug!r} already exists", {"field": "slug"})
    try:
        with transaction.atomic():
            return KnowledgeBase.objects.create(
                slug=slug,
                name=name,
                description=description or "",
                owner=owner,
                embedder=built.embedder,
                embedding_dimensions=built.dimensions,
                chunk_size=built.chunk_size,
                chunk_overlap=built.chunk_overlap,
            )
    except IntegrityError:
        raise Conflict(f"a knowledge base with slug {slug!r} already exists") from None
