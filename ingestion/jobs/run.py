"""Running a claimed job: the pipeline over its documents into its generation, the ANN
index kept up, then the outcome recorded (the generation's status through the
lifecycle). A worker that finishes a job goes on with the next one queued for the same
generation, so none is stranded behind a busy generation. Everything the pipeline writes
is an idempotent upsert, so running a job twice is safe."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet, Sum
from django.utils import timezone

from ingestion.jobs.claim import job_claim, next_queued_job
from ingestion.jobs.report import ProgressCallback, Reporter
from ingestion.models import IngestionJob
from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.progress import Progress
from ingestion.pipeline.runner import PipelineConfig, PipelineResult, run_pipeline
from ingestion.pipeline.types import SourceDocument, VectorCache
from ingestion.services.generations import generation_promote
from knowledge_bases import lifecycle
from knowledge_bases.engines import document_read, embedder_get, generation_store
from knowledge_bases.models import Document, Generation
from ragstudio.env import rag_settings
from ragstudio.errors import RagStudioError
from search.evaluation import generation_quality_gate
from search.stores.generation import CompositeCache, GenerationStore

log = logging.getLogger(__name__)


def run_job_and_queue(job_id: int) -> list[int]:
    """The worker's entry point: run this job, then any queued behind it on the same
    generation (a task that found the generation busy left its job to us)."""
    ran: list[int] = []
    generation_id = (
        IngestionJob.objects.filter(pk=job_id).values_list("generation_id", flat=True).first()
    )
    if generation_id is None:
        return ran
    # First in, first out per generation: an older queued job goes before this one.
    oldest = next_queued_job(generation_id)
    job = job_claim(job_id=oldest) if oldest not in (None, job_id) else None
    job = job or job_claim(job_id=job_id)
    while job is not None:
        job_execute(job)
        ran.append(job.pk)
        following = next_queued_job(job.generation_id)
        job = job_claim(job_id=following) if following is not None else None
    return ran


def _source_documents(documents: Iterable[Document]) -> list[SourceDocument]:
    return [
        SourceDocument(
            id=doc.pk,
            filename=doc.original_filename,
            title=doc.title,
            read=functools.partial(document_read, doc.storage_path),
        )
        for doc in documents
    ]


def _job_documents(
    job: IngestionJob, store: GenerationStore
) -> tuple[QuerySet[Document], set[int]]:
    """What the job still has to index, and the ids of its documents already done: for a
    rebuild all of them are to do (a resumed rebuild reuses what it already wrote); for an
    ingest, a document is done only when it is there and marked indexed: marked but absent
    (indexed into another generation) is done again, and so is present but not marked (a
    crash mid-document; its rows are reused)."""
    documents = job.documents.order_by("pk")
    if job.kind == IngestionJob.Kind.REBUILD:
        return documents, set()
    indexed = list(documents.filter(status=Document.Status.INDEXED).values_list("pk", flat=True))
    done = store.vectors.documents_present(indexed)
    return documents.exclude(pk__in=done), done


def _count_finished_work(job: IngestionJob, done: set[int], progress: Progress) -> None:
    """Counters describe the whole job, not one attempt: documents an earlier attempt
    finished start this one as done (total, persisted, and embedded or reused as the
    earlier attempts counted them); what this attempt redoes is counted as it goes (a
    vector stored before the crash counts as reused)."""
    finished = Document.objects.filter(pk__in=done)
    chunks = int(finished.aggregate(n=Sum("chunk_count"))["n"] or 0)
    embedded = min(job.embedded, chunks)
    progress.add(
        total=chunks, queued=chunks, persisted=chunks, embedded=embedded, skipped=chunks - embedded
    )
    IngestionJob.objects.filter(pk=job.pk).update(documents_done=len(done), documents_failed=0)


def _late_documents(job: IngestionJob) -> list[Document]:
    """Documents uploaded while a rebuild ran: it takes them in before it is ready."""
    late = list(
        Document.objects.filter(knowledge_base_id=job.knowledge_base_id)
        .exclude(pk__in=job.documents.values("pk"))
        .order_by("pk")
    )
    if late:
        job.documents.add(*late)
        IngestionJob.objects.filter(pk=job.pk).update(
            documents_total=F("documents_total") + len(late)
        )
    return late


def _vector_cache(job: IngestionJob, store: GenerationStore, fingerprint: str) -> VectorCache:
    """The target itself (a resumed job re-embeds nothing); for a rebuild, also every
    other generation built by the same model (unchanged text is never re-embedded)."""
    if job.kind != IngestionJob.Kind.REBUILD:
        return store
    others = (
        Generation.objects.filter(
            knowledge_base_id=job.knowledge_base_id,
            embedder_fingerprint=fingerprint,
            files_deleted_at__isnull=True,
        )
        .exclude(pk=job.generation_id)
        .exclude(status=Generation.Status.COLLECTED)
        .order_by("-number")
    )
    return CompositeCache([store, *(generation_store(g) for g in others)])


def job_execute(
    job: IngestionJob,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> IngestionJob:
    """Run a claimed job to the end and record how it ended. ``cancel`` (set by the CLI's
    Ctrl-C, or by a cancel request seen in the database) stops it after a flush."""
    generation = job.generation
    progress = Progress()
    cancel = cancel or threading.Event()
    reporter = Reporter(job, progress, cancel, on_progress)
    result: PipelineResult | None = None
    error = ""
    # Heartbeat from the start: loading a model can take longer than the stale threshold.
    reporter.start()
    try:
        embedder = embedder_get(generation.embedder)
        if (
            generation.embedder_fingerprint
            and generation.embedder_fingerprint != embedder.fingerprint
        ):
            raise RuntimeError(
                "the embedding model changed since this generation was built "
                f"({generation.embedder_fingerprint} -> {embedder.fingerprint}): rebuild instead"
            )
        if embedder.dimensions != generation.dimensions:
            raise RuntimeError(
                f"the embedder gives {embedder.dimensions}-d vectors, the generation holds "
                f"{generation.dimensions}-d"
            )
        if not generation.embedder_fingerprint:
            lifecycle.generation_fingerprint_record(
                generation=generation, fingerprint=embedder.fingerprint
            )
        store = generation_store(generation)
        chunker = Chunker(
            embedder.tokenizer, size=generation.chunk_size, overlap=generation.chunk_overlap
        )
        config = PipelineConfig(
            store_batch_size=job.store_batch_size,
            embed_batch_size=job.embed_batch_size,
            max_document_bytes=settings.RAGSTUDIO_MAX_UPLOAD_BYTES,
            parse_timeout=rag_settings()["PARSE_TIMEOUT_SECONDS"] or None,
        )
        cache = _vector_cache(job, store, embedder.fingerprint)
        todo, done = _job_documents(job, store)
        _count_finished_work(job, done, progress)
        reporter.counting.set()
        documents = _source_documents(todo)
        while True:
            part = run_pipeline(
                documents=documents,
                embedder=embedder,
                store=store,
                chunker=chunker,
                config=config,
                progress=progress,
                cancel=cancel,
                vector_cache=cache,
            )
            result = part if result is None else result.merge(part)
            if job.kind != IngestionJob.Kind.REBUILD or part.cancelled:
                break
            late = _late_documents(job)
            if not late:
                break
            documents = _source_documents(late)
        if result is not None and not result.cancelled:
            _index_vectors(job, store)
    except Exception as exc:
        log.exception("ingestion job %s failed", job.pk)
        error = str(exc) or type(exc).__name__
    finally:
        reporter.stop_event.set()
        reporter.join()
        if not reporter.lost.is_set():
            reporter.flush()  # the last counters and outcomes, from this thread
    if reporter.lost.is_set():
        log.warning("job %s was taken over by another worker; this one stopped", job.pk)
        job.refresh_from_db()
        return job
    return _finish(job, generation, result, error)


def _index_vectors(job: IngestionJob, store: GenerationStore) -> None:
    """Build (or bring up to date) the ANN index once the table is past the threshold,
    while this job still holds the generation. A failure here leaves exact search, which
    is slower but right, so it does not fail the job."""
    try:
        outcome = store.vectors.ensure_vector_index(min_rows=rag_settings()["ANN_MIN_ROWS"])
    except Exception:
        log.exception("job %s: building the vector index failed; searches stay exact", job.pk)
        return
    if outcome in ("built", "updated"):
        log.info("job %s: vector index %s (%d rows)", job.pk, outcome, store.vectors.count())


def _finish(
    job: IngestionJob, generation: Generation, result: PipelineResult | None, error: str
) -> IngestionJob:
    with transaction.atomic():
        job.refresh_from_db()
        now = timezone.now()
        if error:
            job.status = IngestionJob.Status.FAILED
            job.error_message = error[:4000]
        elif result is not None and result.cancelled:
            job.status = IngestionJob.Status.CANCELLED
        else:
            job.status = IngestionJob.Status.SUCCEEDED
        job.buffered = 0
        job.eta_seconds = None if job.status != IngestionJob.Status.SUCCEEDED else 0.0
        job.finished_at = now
        job.heartbeat_at = now
        job.save()
        if job.kind == IngestionJob.Kind.REBUILD:
            _finish_rebuild(job, generation, result)
            return job
        if error:
            return job
        count = generation_store(generation).vectors.count()
        lifecycle.generation_counts_record(generation=generation, chunks=count, vectors=count)
    if job.status == IngestionJob.Status.SUCCEEDED:
        lifecycle.generation_activate_first(generation=generation, actor=job.created_by)
    return job


def _finish_rebuild(
    job: IngestionJob, generation: Generation, result: PipelineResult | None
) -> None:
    """A rebuild that ended: its generation becomes ready (then checked, and promoted when
    asked and the check passes) or failed."""
    ok = job.status == IngestionJob.Status.SUCCEEDED and result is not None
    lifecycle.generation_build_finished(
        generation=generation,
        error="" if ok else (job.error_message or job.status),
        chunks=sum(result.indexed.values()) if ok and result is not None else 0,
        vectors=generation_store(generation).vectors.count() if ok else 0,
        actor=job.created_by,
        note=f"rebuild job {job.pk}" + ("" if ok else f" {job.status}"),
    )
    if ok:
        transaction.on_commit(lambda: _check_and_promote(job, generation))


def _check_and_promote(job: IngestionJob, generation: Generation) -> None:
    """The structural check, then the quality gate (the KB's evaluation sets on this
    generation and on the active one); auto-promote only when both pass. A regression
    leaves the generation ready, marked with the numbers, for a promote by hand."""
    lifecycle.generation_check(generation=generation)
    if generation.check_passed:
        try:
            generation_quality_gate(generation=generation, actor=job.created_by)
        except RagStudioError as exc:
            log.warning("job %s: quality gate not run: %s", job.pk, exc)
    if job.auto_promote and generation.check_passed and generation.quality_passed is not False:
        try:
            generation_promote(
                kb=job.knowledge_base, number=generation.number, actor=job.created_by
            )
        except RagStudioError as exc:
            # Refused now (an upload is still being indexed into the active generation,
            # say): the generation stays ready and checked, for a promote by hand.
            log.warning("job %s: generation %s not promoted: %s", job.pk, generation.number, exc)
