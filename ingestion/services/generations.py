"""Generation actions as users ask for them: rebuild, promote, roll back, collect. The
lifecycle changes the generations; what must follow (indexing the documents a generation
that now serves lacks) is started here."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from ingestion.models import IngestionJob
from ingestion.selectors import rebuild_in_progress
from ingestion.services.queue import batch_sizes_validate, ingestion_job_create, job_queue
from knowledge_bases import lifecycle
from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.errors import Conflict


@transaction.atomic
def generation_rebuild_start(
    *,
    kb: KnowledgeBase,
    user: Any = None,
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    auto_promote: bool = False,
    enqueue: bool = True,
    store_batch_size: int | None = None,
    embed_batch_size: int | None = None,
) -> IngestionJob:
    """Build a new generation from all the KB's documents (with its settings or new ones)
    while the active one keeps serving and taking uploads."""
    batch_sizes_validate(store_batch_size, embed_batch_size)
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
    running = rebuild_in_progress(kb.pk)
    if running is not None:
        raise Conflict(f"a rebuild is already in progress (job {running.pk})")
    if kb.active_generation_id is None:
        raise Conflict("this knowledge base has no active generation yet: ingest documents first")
    generation = lifecycle.generation_create(
        kb=kb,
        actor=user,
        note="rebuild",
        embedder=embedder,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )
    assert generation.status == Generation.Status.BUILDING
    return job_queue(
        kb=kb,
        generation=generation,
        kind=IngestionJob.Kind.REBUILD,
        document_ids=Document.objects.filter(knowledge_base=kb).values_list("pk", flat=True),
        user=user,
        enqueue=enqueue,
        store_batch_size=store_batch_size,
        embed_batch_size=embed_batch_size,
        auto_promote=auto_promote,
    )


def _follow_up(kb: KnowledgeBase, activation: lifecycle.Activation, actor: Any) -> Generation:
    if activation.requeue:
        ingestion_job_create(kb=kb, documents=activation.requeue, user=actor)
    return activation.generation


@transaction.atomic
def generation_promote(
    *, kb: KnowledgeBase, number: int, actor: Any = None, override_quality: str = ""
) -> Generation:
    """Make a ready (checked) or archived generation the one that serves; documents it
    lacks are indexed into it by a new job. A generation that failed the quality gate
    needs ``override_quality`` (the reason, recorded with the actor)."""
    activation = lifecycle.generation_promote(
        kb=kb, number=number, actor=actor, override_quality=override_quality
    )
    return _follow_up(kb, activation, actor)


@transaction.atomic
def generation_rollback(*, kb: KnowledgeBase, actor: Any = None) -> Generation:
    """One step back to the newest archived generation older than the active one."""
    return _follow_up(kb, lifecycle.generation_rollback(kb=kb, actor=actor), actor)


def generations_gc(*, kb: KnowledgeBase, actor: Any = None) -> dict[str, Any]:
    return lifecycle.generations_gc(kb=kb, actor=actor)


def generations_gc_all() -> dict[str, Any]:
    return lifecycle.generations_gc_all()
