"""Claiming and running ingestion jobs.

A job is claimed with a conditional update under a lock on its generation: at most one
job writes to a generation at a time (tantivy allows one writer per index), a job whose
heartbeat went stale is taken over, and a worker that finishes a job goes on with the
next one queued for the same generation, so none is stranded behind a busy generation.
Everything the pipeline writes is an idempotent upsert, so running a job twice is safe.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from ingestion.embedders import EmbedderConfig, build_embedder
from ingestion.models import IngestionJob
from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.progress import DocumentOutcome, Progress, ProgressSnapshot
from ingestion.pipeline.runner import PipelineConfig, PipelineResult, run_pipeline
from ingestion.pipeline.types import Embedder, SourceDocument, VectorCache
from ingestion.services import document_path
from knowledge_bases.models import Document, Generation
from knowledge_bases.services import generation_activate_first
from ragstudio.env import rag_settings
from search.services import generation_store
from search.stores.generation import CompositeCache, GenerationStore

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds: counters reach the job row at least this often
ProgressCallback = Callable[[IngestionJob, ProgressSnapshot], None]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _stale_cutoff():  # type: ignore[no-untyped-def]
    return timezone.now() - timedelta(seconds=rag_settings()["HEARTBEAT_STALE_SECONDS"])


@functools.lru_cache(maxsize=4)
def get_embedder(spec: str) -> Embedder:
    """One loaded model per process and spec (loading costs a second or more)."""
    cfg = rag_settings()
    return build_embedder(
        spec,
        EmbedderConfig(
            model_dir=Path(cfg["MODEL_DIR"]),
            threads=cfg["EMBED_THREADS"] or None,
            openai_base_url=cfg["OPENAI_BASE_URL"],
            openai_api_key=cfg["OPENAI_API_KEY"],
            openai_dimensions=cfg["OPENAI_DIMENSIONS"] or None,
            openai_timeout=cfg["OPENAI_TIMEOUT"],
            openai_max_retries=cfg["OPENAI_MAX_RETRIES"],
        ),
    )


def job_claim(*, job_id: int, worker: str | None = None) -> IngestionJob | None:
    """Mark the job running for this worker, or return None when it is finished, running
    elsewhere with a live heartbeat, or its generation is busy with another job."""
    worker = worker or worker_name()
    with transaction.atomic():
        generation_id = (
            IngestionJob.objects.filter(pk=job_id).values_list("generation_id", flat=True).first()
        )
        if generation_id is None:
            return None
        # The generation's row first: two jobs of one generation claim one after the other.
        Generation.objects.select_for_update().filter(pk=generation_id).first()
        job = IngestionJob.objects.select_for_update().get(pk=job_id)
        cutoff = _stale_cutoff()
        if job.status not in (IngestionJob.Status.QUEUED, IngestionJob.Status.RUNNING):
            return None
        if (
            job.status == IngestionJob.Status.RUNNING
            and job.heartbeat_at
            and job.heartbeat_at >= cutoff
        ):
            return None
        busy = (
            IngestionJob.objects.filter(
                generation_id=job.generation_id,
                status=IngestionJob.Status.RUNNING,
                heartbeat_at__gte=cutoff,
            )
            .exclude(pk=job.pk)
            .exists()
        )
        if busy:
            return None
        now = timezone.now()
        if job.attempts >= rag_settings()["JOB_MAX_ATTEMPTS"]:
            job.status = IngestionJob.Status.FAILED
            job.error_message = (
                f"gave up after {job.attempts} attempts: the worker running it stopped "
                "responding each time (killed, or out of memory?)"
            )
            job.finished_at = now
            job.save()
            return None
        job.status = IngestionJob.Status.RUNNING
        job.attempts += 1
        job.worker = worker
        job.heartbeat_at = now
        job.started_at = job.started_at or now
        job.save()
    return job


def next_queued_job(generation_id: int) -> int | None:
    return (
        IngestionJob.objects.filter(generation_id=generation_id, status=IngestionJob.Status.QUEUED)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
        .first()
    )


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


class _Reporter(threading.Thread):
    """Writes the pipeline's counters and document outcomes to the database every second,
    and relays a cancel request to the pipeline."""

    def __init__(
        self,
        job: IngestionJob,
        progress: Progress,
        cancel: threading.Event,
        on_progress: ProgressCallback | None,
    ) -> None:
        super().__init__(name=f"job-{job.pk}-reporter", daemon=True)
        self.job = job
        # Document rows describe the active generation; a rebuild only counts outcomes.
        self.write_documents = job.kind == IngestionJob.Kind.INGEST
        self.progress = progress
        self.cancel = cancel
        self.on_progress = on_progress
        self.stop_event = threading.Event()
        # Set when another worker took the job over (our heartbeat was judged stale): we
        # stop at once and leave the row alone.
        self.lost = threading.Event()
        self.started = time.monotonic()
        self.samples: list[list[float]] = list(job.samples or [])
        self.offset = self.samples[-1][0] if self.samples else 0.0  # a resumed job

    def _sample(self, snap: ProgressSnapshot) -> None:
        at = round(self.offset + time.monotonic() - self.started, 1)
        self.samples.append([at, snap.embedded + snap.skipped, snap.persisted])
        if len(self.samples) > IngestionJob.MAX_SAMPLES:
            # Keep the whole run at half the resolution (the newest sample always stays).
            self.samples = self.samples[-1::-2][::-1]

    def run(self) -> None:
        try:
            while not self.stop_event.wait(REPORT_INTERVAL):
                try:
                    self.flush()
                except DatabaseError:
                    # A busy database must not stop the heartbeat for good: try again
                    # next tick (outcomes not written yet are still queued).
                    log.warning(
                        "job %s: progress write failed, retrying", self.job.pk, exc_info=True
                    )
        finally:
            connection.close()

    def flush(self) -> None:
        snap = self.progress.snapshot()
        outcomes = self.progress.drain_outcomes()
        try:
            updated, cancel = self._write(snap, outcomes)
        except BaseException:
            self.progress.restore_outcomes(outcomes)
            raise
        if not updated:
            self.lost.set()
            self.cancel.set()
            return
        if cancel:
            self.cancel.set()
        if self.on_progress is not None:
            self.job.refresh_from_db()
            self.on_progress(self.job, snap)

    @transaction.atomic
    def _write(self, snap: ProgressSnapshot, outcomes: list[DocumentOutcome]) -> tuple[bool, bool]:
        now = timezone.now()
        self._sample(snap)
        updated = IngestionJob.objects.filter(
            pk=self.job.pk, worker=self.job.worker, status=IngestionJob.Status.RUNNING
        ).update(
            samples=self.samples,
            total=snap.total,
            embedded=snap.embedded,
            persisted=snap.persisted,
            buffered=snap.buffered,
            skipped=snap.skipped,
            errors=snap.errors,
            retries=snap.retries,
            rate=round(snap.rate, 3),
            eta_seconds=None if snap.eta_seconds is None else round(snap.eta_seconds, 1),
            documents_done=F("documents_done") + sum(1 for o in outcomes if o.ok),
            documents_failed=F("documents_failed") + sum(1 for o in outcomes if not o.ok),
            heartbeat_at=now,
        )
        if not updated:
            return False, False  # taken over: outcomes belong to the new owner now
        for outcome in outcomes if self.write_documents else []:
            if outcome.ok:
                fields = {
                    "status": Document.Status.INDEXED,
                    "chunk_count": outcome.chunk_count,
                    "error_message": "",
                }
            else:
                fields = {
                    "status": Document.Status.FAILED,
                    "chunk_count": 0,
                    "error_message": outcome.error[:2000],
                }
            Document.objects.filter(pk=outcome.document_id).update(updated_at=now, **fields)
        cancel = IngestionJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
        return True, cancel


def _source_documents(documents: Iterable[Document]) -> list[SourceDocument]:
    return [
        SourceDocument(
            id=doc.pk,
            filename=doc.original_filename,
            title=doc.title,
            read=functools.partial(document_path(doc).read_bytes),
        )
        for doc in documents
    ]


def _job_documents(job: IngestionJob) -> QuerySet[Document]:
    documents = job.documents.order_by("pk")
    if job.kind == IngestionJob.Kind.REBUILD:
        return documents  # all of them: a resumed rebuild reuses what it already wrote
    return documents.exclude(status=Document.Status.INDEXED)


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
    reporter = _Reporter(job, progress, cancel, on_progress)
    result: PipelineResult | None = None
    error = ""
    # Heartbeat from the start: loading a model can take longer than the stale threshold.
    reporter.start()
    try:
        embedder = get_embedder(generation.embedder)
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
            Generation.objects.filter(pk=generation.pk).update(
                embedder_fingerprint=embedder.fingerprint
            )
        store = generation_store(generation)
        chunker = Chunker(
            embedder.tokenizer, size=generation.chunk_size, overlap=generation.chunk_overlap
        )
        config = PipelineConfig(
            store_batch_size=job.store_batch_size,
            embed_batch_size=job.embed_batch_size,
            max_document_bytes=settings.RAGSTUDIO_MAX_UPLOAD_BYTES,
        )
        cache = _vector_cache(job, store, embedder.fingerprint)
        documents = _source_documents(_job_documents(job))
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
        store = generation_store(generation)
        count = store.vectors.count()
        Generation.objects.filter(pk=generation.pk).update(chunk_count=count, vector_count=count)
    if job.status == IngestionJob.Status.SUCCEEDED:
        generation_activate_first(generation=generation, actor=job.created_by)
    return job


def _finish_rebuild(
    job: IngestionJob, generation: Generation, result: PipelineResult | None
) -> None:
    """A rebuild that ended: its generation becomes ready (then checked, and promoted when
    asked and the check passes) or failed."""
    from knowledge_bases.services import generation_event_record

    now = timezone.now()
    if job.status != IngestionJob.Status.SUCCEEDED or result is None:
        Generation.objects.filter(pk=generation.pk).update(
            status=Generation.Status.FAILED, error_message=job.error_message or job.status
        )
        generation_event_record(
            generation,
            Generation.Status.BUILDING,
            Generation.Status.FAILED,
            job.created_by,
            f"rebuild job {job.pk} {job.status}",
        )
        return
    Generation.objects.filter(pk=generation.pk).update(
        status=Generation.Status.READY,
        ready_at=now,
        # The database's expectation, checked against both stores before promotion.
        chunk_count=sum(result.indexed.values()),
        vector_count=generation_store(generation).vectors.count(),
    )
    generation_event_record(
        generation,
        Generation.Status.BUILDING,
        Generation.Status.READY,
        job.created_by,
        f"rebuild job {job.pk}",
    )
    generation.refresh_from_db()
    transaction.on_commit(lambda: _check_and_promote(job, generation))


def _check_and_promote(job: IngestionJob, generation: Generation) -> None:
    from knowledge_bases.lifecycle import generation_check, generation_promote

    generation_check(generation=generation)
    if job.auto_promote and generation.check_passed:
        generation_promote(kb=job.knowledge_base, number=generation.number, actor=job.created_by)


def jobs_reap_stale() -> dict[str, int]:
    """Running jobs whose worker stopped heartbeating go back to the queue (their writes
    are idempotent) or fail after too many attempts; queued jobs get a task again."""
    from ingestion.services import enqueue_job

    cutoff = _stale_cutoff()
    requeued = failed = 0
    stale = IngestionJob.objects.filter(status=IngestionJob.Status.RUNNING, heartbeat_at__lt=cutoff)
    for job in stale:
        with transaction.atomic():
            updated = IngestionJob.objects.filter(
                pk=job.pk, status=IngestionJob.Status.RUNNING, heartbeat_at__lt=cutoff
            )
            if job.attempts >= rag_settings()["JOB_MAX_ATTEMPTS"]:
                failed += updated.update(
                    status=IngestionJob.Status.FAILED,
                    finished_at=timezone.now(),
                    buffered=0,
                    error_message=(
                        f"the worker stopped responding (no heartbeat for "
                        f"{rag_settings()['HEARTBEAT_STALE_SECONDS']} s) after "
                        f"{job.attempts} attempts"
                    ),
                )
            else:
                requeued += updated.update(status=IngestionJob.Status.QUEUED, worker="", buffered=0)
    # Queued jobs whose generation is free and whose own task should have started by now
    # (lost by a broker restart, or refused while the generation was busy) get a task.
    busy = IngestionJob.objects.filter(
        status=IngestionJob.Status.RUNNING, heartbeat_at__gte=cutoff
    ).values("generation_id")
    queued = list(
        IngestionJob.objects.filter(
            status=IngestionJob.Status.QUEUED,
            created_at__lt=timezone.now() - timedelta(seconds=30),
        )
        .exclude(generation_id__in=busy)
        .values_list("pk", flat=True)
    )
    for job_id in queued:
        enqueue_job(job_id)
    close_old_connections()
    return {"requeued": requeued, "failed": failed, "enqueued": len(queued)}
