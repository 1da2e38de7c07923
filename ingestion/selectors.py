from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from ingestion.models import IngestionJob, Source
from knowledge_bases.models import KnowledgeBase
from knowledge_bases.selectors import knowledge_base_can_change, knowledge_bases_visible_to
from ragstudio.core.errors import Forbidden, NotFound


def jobs_visible_to(user: Any) -> QuerySet[IngestionJob]:
    return IngestionJob.objects.filter(
        knowledge_base__in=knowledge_bases_visible_to(user)
    ).select_related("knowledge_base", "generation")


def job_get(*, job_id: int, user: Any, change: bool = False) -> IngestionJob:
    """The job if ``user`` may see it (and act on it: cancel, retry, with ``change``)."""
    job = jobs_visible_to(user).filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if change and not knowledge_base_can_change(job.knowledge_base, user):
        raise Forbidden(f"job {job_id} belongs to a knowledge base shared with you read-only")
    return job


def rebuild_in_progress(kb_id: int) -> IngestionJob | None:
    """The KB's rebuild that is queued or running (there is at most one)."""
    return IngestionJob.objects.filter(
        knowledge_base_id=kb_id, kind=IngestionJob.Kind.REBUILD, status__in=IngestionJob.LIVE
    ).first()


def recent_jobs(kb: KnowledgeBase, limit: int = 10) -> list[IngestionJob]:
    """The KB's latest jobs, newest first."""
    return list(kb.jobs.select_related("generation")[:limit])


def sources_of(kb: KnowledgeBase) -> QuerySet[Source]:
    return Source.objects.filter(knowledge_base=kb).order_by("name")


def source_get(*, kb: KnowledgeBase, source_id: int) -> Source:
    source = (
        Source.objects.filter(knowledge_base=kb, pk=source_id)
        .select_related("knowledge_base")
        .first()
    )
    if source is None:
        raise NotFound(f"source {source_id} not found in {kb.slug!r}")
    return source
