"""Ingestion jobs: queued, enqueued on the worker broker, cancelled."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from ingestion.models import IngestionJob
from ingestion.selectors import rebuild_in_progress
from knowledge_bases.generations import generation_build_resume, generation_for_ingest
from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.core.bounds import EMBED_BATCH_SIZE, STORE_BATCH_SIZE
from ragstudio.core.errors import Conflict, TooManyRequests, ValidationError
from ragstudio.env import rag_settings


def batch_sizes_validate(store_batch_size: int | None, embed_batch_size: int | None) -> None:
    for bound, value in (
        (STORE_BATCH_SIZE, store_batch_size),
        (EMBED_BATCH_SIZE, embed_batch_size),
    ):
        if value is not None and value not in bound:
            raise ValidationError(bound.describe(), {"field": bound.name})


MAX_DISPATCH_COPIES = 4


def _limited(user: Any) -> bool:
    """Per-user limits apply to people, not to staff or the operator (no user: the CLI)."""
    return bool(getattr(user, "pk", None)) and not getattr(user, "is_staff", False)


def job_limits_check(*, user: Any, rebuild: bool = False) -> None:
    """TooManyRequests (429) when ``user`` has RAGSTUDIO_USER_QUEUED_JOBS jobs waiting, or
    (``rebuild``) RAGSTUDIO_USER_REBUILDS rebuilds queued or running, across every KB: one
    user's backlog cannot grow without bound in front of everyone else's work."""
    if not _limited(user):
        return
    cfg = rag_settings()
    mine = IngestionJob.objects.filter(created_by=user)
    queued_limit = cfg["USER_QUEUED_JOBS"]
    if queued_limit:
        queued = mine.filter(status=IngestionJob.Status.QUEUED).count()
        if queued >= queued_limit:
            raise TooManyRequests(
                f"you have {queued} jobs waiting, the most allowed here is {queued_limit}: "
                "try again when some have run",
                retry_after=cfg["USER_LIMIT_RETRY_SECONDS"],
                extra={"limit": "queued_jobs", "max": queued_limit},
            )
    rebuild_limit = cfg["USER_REBUILDS"]
    if rebuild and rebuild_limit:
        live = mine.filter(kind=IngestionJob.Kind.REBUILD, status__in=IngestionJob.LIVE).count()
        if live >= rebuild_limit:
            raise TooManyRequests(
                f"you have {live} rebuilds queued or running, the most allowed here is "
                f"{rebuild_limit}: try again when one has finished",
                retry_after=cfg["USER_LIMIT_RETRY_SECONDS"],
                extra={"limit": "rebuilds", "max": rebuild_limit},
            )


def dispatch_copies() -> int:
    """How many tasks to send for one job: one per running cluster (at most four) with the
    Redis broker, one otherwise. A cluster's pusher takes the next task from Redis while its
    worker is still busy and holds it until that worker is free, so with one task a job
    could wait behind another cluster's job while this one idles. Every copy claims the
    job with a conditional update: the first runs it, the others find it taken and end at
    once (tasks are safe to run twice by design)."""
    from django.conf import settings

    if not settings.Q_CLUSTER.get("redis"):
        return 1
    from django_q.brokers import get_broker
    from django_q.status import Stat

    try:
        clusters = len(Stat.get_all(broker=get_broker()))
    except Exception:  # no stats (a broker hiccup): one task, the reaper covers the rest
        return 1
    return max(1, min(clusters, MAX_DISPATCH_COPIES))


def enqueue_job(job_id: int) -> None:
    from django_q.tasks import async_task

    for copy in range(dispatch_copies()):
        async_task(
            "ingestion.tasks.run_ingestion_job",
            job_id,
            task_name=f"ingestion-job-{job_id}" + (f"-copy{copy}" if copy else ""),
            group="ingestion",
        )


@transaction.atomic
def ingestion_job_create(
    *,
    kb: KnowledgeBase,
    documents: Sequence[Document],
    user: Any = None,
    enqueue: bool = True,
    store_batch_size: int | None = None,
    embed_batch_size: int | None = None,
) -> IngestionJob:
    """Queue a job for these documents, plus any of the KB's pending documents that no
    queued or running job holds (left behind by a cancelled or failed job)."""
    batch_sizes_validate(store_batch_size, embed_batch_size)
    generation = generation_for_ingest(kb=kb, actor=user)
    held = Document.objects.filter(
        knowledge_base=kb,
        jobs__kind=IngestionJob.Kind.INGEST,  # a rebuild does not index into the active one
        jobs__status__in=IngestionJob.LIVE,
    ).values("pk")
    orphans = Document.objects.filter(knowledge_base=kb, status=Document.Status.PENDING).exclude(
        pk__in=held
    )
    return job_queue(
        kb=kb,
        generation=generation,
        kind=IngestionJob.Kind.INGEST,
        document_ids={d.pk for d in documents} | set(orphans.values_list("pk", flat=True)),
        user=user,
        enqueue=enqueue,
        store_batch_size=store_batch_size,
        embed_batch_size=embed_batch_size,
    )


def job_queue(
    *,
    kb: KnowledgeBase,
    generation: Generation,
    kind: str,
    document_ids: Iterable[int],
    user: Any,
    enqueue: bool,
    store_batch_size: int | None,
    embed_batch_size: int | None,
    auto_promote: bool = False,
) -> IngestionJob:
    """A queued job of these documents into ``generation``, its task sent after commit."""
    job = IngestionJob.objects.create(
        knowledge_base=kb,
        generation=generation,
        kind=kind,
        auto_promote=auto_promote,
        store_batch_size=store_batch_size or rag_settings()["STORE_BATCH_SIZE"],
        embed_batch_size=embed_batch_size or rag_settings()["EMBED_BATCH_SIZE"],
        created_by=user if getattr(user, "pk", None) else None,
    )
    job.documents.set(document_ids)
    job.documents_total = job.documents.count()
    job.save(update_fields=["documents_total"])
    if enqueue:
        transaction.on_commit(lambda: enqueue_job(job.pk))
    return job


@transaction.atomic
def ingestion_job_cancel(*, job: IngestionJob) -> IngestionJob:
    """A queued job is cancelled at once; a running one stops after flushing what it has
    embedded (the worker sees the request within a second)."""
    job = IngestionJob.objects.select_for_update().get(pk=job.pk)
    if job.is_finished:
        raise Conflict(f"job {job.pk} has already finished ({job.status})")
    if job.status == IngestionJob.Status.QUEUED:
        job.status = IngestionJob.Status.CANCELLED
        job.finished_at = timezone.now()
    job.cancel_requested = True
    job.save(update_fields=["status", "finished_at", "cancel_requested"])
    return job


RETRYABLE = (IngestionJob.Status.FAILED, IngestionJob.Status.CANCELLED)


@transaction.atomic
def ingestion_job_retry(*, job: IngestionJob, user: Any = None) -> IngestionJob:
    """Run a failed or cancelled job again. It resumes: rows its earlier attempts wrote
    are kept and reused, never embedded or stored twice. An ingest whose generation no
    longer takes uploads (a swap since) becomes a new job for the generation that does."""
    job = IngestionJob.objects.select_for_update().get(pk=job.pk)
    if job.status not in RETRYABLE:
        raise Conflict(
            f"job {job.pk} is {job.status}: only a failed or cancelled job can be retried",
            {"job": job.pk, "status": job.status},
        )
    if job.kind == IngestionJob.Kind.INGEST:
        target = generation_for_ingest(kb=job.knowledge_base, actor=user)
        if target.pk != job.generation_id:
            return ingestion_job_create(
                kb=job.knowledge_base, documents=list(job.documents.all()), user=user
            )
    else:
        live = rebuild_in_progress(job.knowledge_base_id)
        if live is not None:
            raise Conflict(f"a rebuild is already in progress (job {live.pk})")
        generation_build_resume(generation=job.generation, actor=user)
    job.status = IngestionJob.Status.QUEUED
    job.error_message = ""
    job.finished_at = None
    job.cancel_requested = False
    job.worker = ""
    job.attempts = 0  # a new round of attempts
    job.save()
    transaction.on_commit(lambda: enqueue_job(job.pk))
    return job
