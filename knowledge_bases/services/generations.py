"""Generation actions as users ask for them (rebuild, promote, roll back, collect), and
what follows a build (its check, the quality gate, auto-promote). The generations package
changes the generations; the jobs that must follow (indexing the documents a generation
that now serves lacks) are queued here."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from ingestion.models import IngestionJob
from ingestion.selectors import rebuild_in_progress
from ingestion.services.queue import (
    batch_sizes_validate,
    ingestion_job_create,
    job_limits_check,
    job_queue,
)
from knowledge_bases import generations
from knowledge_bases.models import AuditEvent, Document, Generation, KnowledgeBase
from ragstudio.core.errors import Conflict, RagStudioError
from search.evaluation import quality_gate_measure
from search.stores.generation import GenerationStore

log = logging.getLogger(__name__)


@transaction.atomic
def generation_rebuild_start(
    *,
    kb: KnowledgeBase,
    user: Any = None,
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    language: str | None = None,
    auto_promote: bool = False,
    enqueue: bool = True,
    store_batch_size: int | None = None,
    embed_batch_size: int | None = None,
) -> IngestionJob:
    """Build a new generation from all the KB's documents (with its settings or new ones)
    while the active one keeps serving and taking uploads."""
    batch_sizes_validate(store_batch_size, embed_batch_size)
    if enqueue:
        job_limits_check(user=user, rebuild=True)
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
    running = rebuild_in_progress(kb.pk)
    if running is not None:
        raise Conflict(f"a rebuild is already in progress (job {running.pk})")
    if kb.active_generation_id is None:
        raise Conflict("this knowledge base has no active generation yet: ingest documents first")
    generation = generations.generation_create(
        kb=kb,
        actor=user,
        note="rebuild",
        embedder=embedder,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        language=language,
    )
    job = job_queue(
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
    AuditEvent.record(
        AuditEvent.Action.GENERATION_REBUILD,
        actor=user,
        kb=kb,
        target=f"generation #{generation.number}",
        detail={
            "embedder": generation.embedder,
            "chunk_size": generation.chunk_size,
            "chunk_overlap": generation.chunk_overlap,
            "auto_promote": auto_promote,
            "job": job.pk,
        },
    )
    return job


def _active_number(kb: KnowledgeBase) -> int | None:
    """The number of the generation serving now (the row, not a stale instance)."""
    return (
        KnowledgeBase.objects.filter(pk=kb.pk)
        .values_list("active_generation__number", flat=True)
        .first()
    )


def _follow_up(kb: KnowledgeBase, activation: generations.Activation, actor: Any) -> Generation:
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
    replaced = _active_number(kb)
    activation = generations.generation_promote(
        kb=kb, number=number, actor=actor, override_quality=override_quality
    )
    AuditEvent.record(
        AuditEvent.Action.GENERATION_OVERRIDE
        if override_quality
        else AuditEvent.Action.GENERATION_PROMOTE,
        actor=actor,
        kb=kb,
        target=f"generation #{number}",
        detail={"replaced": replaced, **({"reason": override_quality} if override_quality else {})},
    )
    return _follow_up(kb, activation, actor)


@transaction.atomic
def generation_rollback(*, kb: KnowledgeBase, actor: Any = None) -> Generation:
    """One step back: to the generation the last promote replaced."""
    replaced = _active_number(kb)
    activation = generations.generation_rollback(kb=kb, actor=actor)
    AuditEvent.record(
        AuditEvent.Action.GENERATION_ROLLBACK,
        actor=actor,
        kb=kb,
        target=f"generation #{activation.generation.number}",
        detail={"replaced": replaced},
    )
    return _follow_up(kb, activation, actor)


def generations_gc(*, kb: KnowledgeBase, actor: Any = None) -> dict[str, Any]:
    """Collect generations past retention, delete their files, compact the active one."""
    outcome = generations.generations_gc(kb=kb, actor=actor)
    AuditEvent.record(
        AuditEvent.Action.GENERATION_GC, actor=actor, kb=kb, target="generations", detail=outcome
    )
    return outcome


def generations_gc_all() -> dict[str, Any]:
    """The scheduled GC over every knowledge base, then files left by deletes."""
    return generations.generations_gc_all()


def generation_build_ended(
    *, job: IngestionJob, chunks: int, store: GenerationStore | None
) -> None:
    """What follows a job's end for the generation it wrote (called once, inside the
    transaction that records the job's outcome). An ingest records what the generation now
    holds; the first build becomes active when its job succeeded. A rebuild's generation
    becomes ready (``chunks`` indexed) or failed; once that is committed, a ready one is
    checked, then measured by the quality gate, then promoted when the job asked for it
    and both passed."""
    generation = job.generation
    succeeded = job.status == IngestionJob.Status.SUCCEEDED
    rows = generations.rows_visible(generation, store) if store is not None else 0
    if job.kind == IngestionJob.Kind.INGEST:
        if store is None or job.status == IngestionJob.Status.FAILED:
            return  # its documents stay pending; a retry resumes what it wrote
        generations.generation_counts_record(generation=generation, chunks=rows, vectors=rows)
        if succeeded:
            generations.generation_activate_first(generation=generation, actor=job.created_by)
        return
    ok = succeeded and store is not None
    generations.generation_build_finished(
        generation=generation,
        error="" if ok else (job.error_message or job.status),
        chunks=chunks if ok else 0,
        vectors=rows if ok else 0,
        actor=job.created_by,
        note=f"rebuild job {job.pk}" + ("" if ok else f" {job.status}"),
    )
    if ok:
        transaction.on_commit(lambda: _check_gate_promote(job, generation, store))


def _check_gate_promote(
    job: IngestionJob, generation: Generation, store: GenerationStore | None
) -> None:
    """The structural check, then the quality gate (the KB's evaluation sets on this
    generation and on the active one); auto-promote only when both pass. A regression
    leaves the generation ready, marked with the numbers, for a promote by hand."""
    generations.generation_check(generation=generation, store=store)
    if generation.check_passed:
        try:
            passed, report = quality_gate_measure(generation=generation, actor=job.created_by)
        except RagStudioError as exc:
            log.warning("job %s: quality gate not run: %s", job.pk, exc)
        else:
            generations.generation_quality_record(
                generation=generation, passed=passed, report=report, actor=job.created_by
            )
    if job.auto_promote and generation.check_passed and generation.quality_passed is not False:
        try:
            generation_promote(
                kb=job.knowledge_base, number=generation.number, actor=job.created_by
            )
        except RagStudioError as exc:
            # Refused now (an upload is still being indexed into the active generation,
            # say): the generation stays ready and checked, for a promote by hand.
            log.warning("job %s: generation %s not promoted: %s", job.pk, generation.number, exc)
