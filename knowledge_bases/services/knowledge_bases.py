"""Creating, changing and deleting knowledge bases."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction

from ingestion.models import IngestionJob
from knowledge_bases.generations import (
    build_settings_resolve,
    knowledge_base_files_forget,
    storage_cleanup_run,
)
from knowledge_bases.models import AuditEvent, KnowledgeBase
from ragstudio.core import languages
from ragstudio.core.errors import Conflict, Forbidden, ValidationError
from ragstudio.core.text import storable
from ragstudio.core.vocabulary import quality_gate_problems
from ragstudio.env import rag_settings

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
SLUG_RULE = "1-64 lowercase letters, digits or hyphens, not starting or ending with a hyphen"


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
    quality_gate: dict[str, float] | None = None,
    language: str | None = None,
) -> KnowledgeBase:
    slug = (slug or "").strip().lower()
    if not SLUG.match(slug):
        raise ValidationError(f"slug must be {SLUG_RULE}", {"field": "slug"})
    name = (name or "").strip()
    if not name or len(name) > 200 or not storable(name):
        raise ValidationError("name must be 1 to 200 characters of text", {"field": "name"})
    if not storable(description or ""):
        raise ValidationError("description must be text", {"field": "description"})
    built = build_settings_resolve(
        embedder=embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap, actor=owner
    )
    gate = _quality_gate_valid(quality_gate)
    language = language or languages.DEFAULT
    if language not in languages.CHOICES:
        raise ValidationError(
            f"language must be one of {', '.join(languages.CHOICES)}", {"field": "language"}
        )
    _quota_knowledge_bases(owner)
    # Slugs are per owner: only the creator's own KBs can conflict, so the answer says
    # nothing about anyone else's.
    if KnowledgeBase.objects.filter(slug=slug, owner=owner).exists():
        raise Conflict(f"you already have a knowledge base with slug {slug!r}", {"field": "slug"})
    try:
        with transaction.atomic():
            kb = KnowledgeBase.objects.create(
                slug=slug,
                name=name,
                description=description or "",
                owner=owner,
                embedder=built.embedder,
                embedding_dimensions=built.dimensions,
                chunk_size=built.chunk_size,
                chunk_overlap=built.chunk_overlap,
                language=language,
                **({"quality_gate": gate} if gate is not None else {}),
            )
    except IntegrityError:
        raise Conflict(
            f"you already have a knowledge base with slug {slug!r}", {"field": "slug"}
        ) from None
    AuditEvent.record(
        AuditEvent.Action.KB_CREATE,
        actor=owner,
        kb=kb,
        target=f"knowledge base {kb.slug}",
        detail={
            "embedder": kb.embedder,
            "chunk_size": kb.chunk_size,
            "chunk_overlap": kb.chunk_overlap,
            "language": kb.language,
        },
    )
    return kb


def _quality_gate_valid(gate: dict[str, float] | None) -> dict[str, float] | None:
    if gate is None:
        return None
    problems = quality_gate_problems(gate)
    if problems:
        raise ValidationError("; ".join(problems), {"field": "quality_gate"})
    return {key: float(value) for key, value in gate.items()}


@transaction.atomic
def knowledge_base_update(
    *,
    kb: KnowledgeBase,
    name: str | None = None,
    description: str | None = None,
    quality_gate: dict[str, float] | None = None,
    actor: Any = None,
) -> KnowledgeBase:
    """Change what may change without a rebuild: the name, the description and the
    quality gate (the chunking and the model change through a rebuild)."""
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
    before = {"name": kb.name, "description": kb.description, "quality_gate": kb.quality_gate}
    fields = ["updated_at"]
    if name is not None:
        name = name.strip()
        if not name or len(name) > 200 or not storable(name):
            raise ValidationError("name must be 1 to 200 characters of text", {"field": "name"})
        kb.name = name
        fields.append("name")
    if description is not None:
        if not storable(description):
            raise ValidationError("description must be text", {"field": "description"})
        kb.description = description
        fields.append("description")
    gate = _quality_gate_valid(quality_gate)
    if gate is not None:
        kb.quality_gate = gate
        fields.append("quality_gate")
    kb.save(update_fields=fields)
    changes = {
        f: {"from": before[f], "to": getattr(kb, f)}
        for f in fields
        if f in before and before[f] != getattr(kb, f)
    }
    if changes:
        AuditEvent.record(
            AuditEvent.Action.KB_UPDATE,
            actor=actor,
            kb=kb,
            target=f"knowledge base {kb.slug}",
            detail=changes,
        )
    return kb


def _quota_knowledge_bases(owner: Any) -> None:
    limit = rag_settings()["QUOTA_KNOWLEDGE_BASES"]
    if not limit or owner is None or getattr(owner, "is_staff", False):
        return
    owned = KnowledgeBase.objects.filter(owner=owner).count()
    if owned >= limit:
        raise Forbidden(
            f"quota: you own {owned} knowledge bases, the most allowed here is {limit} "
            "(delete one, or ask staff)",
            {"quota": "knowledge_bases", "limit": limit},
        )


def knowledge_base_delete(*, kb: KnowledgeBase) -> None:
    """Delete a knowledge base with everything it has: its rows now, its LanceDB tables,
    tantivy indexes and uploads after the commit (GC finishes a cleanup a crash cut
    short). Refused (409) while one of its jobs is queued or running."""
    with transaction.atomic():
        kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
        job = IngestionJob.objects.filter(knowledge_base=kb, status__in=IngestionJob.LIVE).first()
        if job is not None:
            raise Conflict(
                f"job {job.pk} is {job.status}: cancel it, or wait for it, before deleting "
                f"{kb.slug!r}",
                {"job": job.pk},
            )
        ids = knowledge_base_files_forget(kb=kb)
        kb.active_generation = None  # the pointer protects its generation from deletion
        kb.save(update_fields=["active_generation"])
        AuditEvent.record(
            AuditEvent.Action.KB_DELETE,
            kb=kb,
            target=f"knowledge base {kb.slug} ({kb.name})",
            detail={"documents": kb.documents.count()},
        )
        kb.delete()
        transaction.on_commit(lambda: storage_cleanup_run(ids=ids))
