"""Running a claimed job: the pipeline over its documents into its generation (one build
context, opened once), the ANN index kept up, then the outcome recorded and handed to the
generation's post-build policy. A worker that finishes a job goes on with the next one
queued for the same generation, so none is stranded behind a busy generation. Everything
the pipeline writes is an idempotent upsert, so running a job twice is safe."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections, connections, models, transaction
from django.db.models import F, QuerySet, Sum
from django.utils import timezone

from ingestion.jobs.claim import fair_candidates, job_claim
from ingestion.jobs.report import ProgressCallback, Reporter
from ingestion.models import IngestionJob
from ingestion.pipeline.progress import Progress
from ingestion.pipeline.runner import PipelineResult, run_pipeline
from knowledge_bases.generations import (
    GenerationBuild,
    build_config,
    document_sources,
    open_build,
)
from knowledge_bases.models import Document, KnowledgeBase
from knowledge_bases.services import generation_build_ended
from ragstudio.core import metrics
from ragstudio.env import rag_settings

log = logging.getLogger(__name__)


def run_job_and_queue(job_id: int) -> list[int]:
    """The worker's entry point: run queued jobs, fairly, until none can be claimed. A
    task carries one job's id, but a free worker takes the job that is fairest to run
    next (``fair_candidates``: first in, first out within a generation, the user served
    longest ago first between them); this task's own job is then run by whichever task
    reaches it first. A job whose worker died is taken over by its own task."""
    ran: list[int] = []
    if not IngestionJob.objects.filter(pk=job_id).exists():
        return ran
    job = _claim_fairest() or job_claim(job_id=job_id)
    while job is not None:
        job_execute(job, yield_to=_yield_of(job, frozenset()))
        ran.append(job.pk)
        job = _claim_fairest()
    return ran


def _claim_fairest(excluding_users: frozenset[int | None] = frozenset()) -> IngestionJob | None:
    for candidate in fair_candidates(excluding_users):
        job = job_claim(job_id=candidate)
        if job is not None:
            return job
    return None


class JobYield:
    """Called by long work in the worker between its steps (a job between windows, an
    evaluation run after each query): at the last step boundary before
    ``JOB_WINDOW_SECONDS`` pass since it last yielded (judged by the step just ended), the
    fairest job another user queued runs here, to its end, then the work goes on. Nothing
    is redone (the work is paused, not stopped) and a paused job's heartbeat goes on
    meanwhile. ``users``: those whose work is paused here (their own queued jobs wait their
    turn); a job run here may yield in turn, to other users."""

    def __init__(self, label: str, users: frozenset[int | None]) -> None:
        self.label = label
        self.users = users
        self.window = rag_settings()["JOB_WINDOW_SECONDS"]
        self.since = self.last = time.monotonic()

    def __call__(self) -> None:
        # Yield at the last step boundary inside the window, not the first one past it:
        # a step as long as the one just ended would overrun it.
        now = time.monotonic()
        step, self.last = now - self.last, now
        if now - self.since + step < self.window:
            return
        try:
            other = _claim_fairest(self.users)
            if other is not None:
                log.info("%s yields its worker to job %s", self.label, other.pk)
                job_execute(other, yield_to=_yield_of(other, self.users))
        except Exception:  # the other job's failure is its own, never this work's
            log.exception("%s: a job it yielded to failed", self.label)
        finally:
            if threading.current_thread() is not threading.main_thread():
                # The other job's connections were opened in this (prefetch) thread.
                connections.close_all()
            self.since = self.last = time.monotonic()


def run_yielding(
    label: str, model: type[models.Model], pk: int, execute: Callable[..., str]
) -> str:
    """A worker task for long work that is not a job (an evaluation run, a rebuild plan):
    ``execute(pk, pause=...)`` lets other users' waiting jobs run between its steps."""
    close_old_connections()
    try:
        user = model._default_manager.filter(pk=pk).values_list("created_by_id", flat=True)
        return execute(int(pk), pause=JobYield(f"{label} {pk}", frozenset(user)))
    finally:
        close_old_connections()


def _yield_of(job: IngestionJob, paused: frozenset[int | None]) -> JobYield:
    return JobYield(f"job {job.pk}", paused | {job.created_by_id})


def _job_documents(
    job: IngestionJob, build: GenerationBuild
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
    done = build.documents_present(indexed)
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


def _late_documents(
    job: IngestionJob, built: dict[int, int], build: GenerationBuild
) -> list[Document]:
    """What a rebuild takes in before it is ready: documents uploaded while it ran, and
    new versions of documents it had built already (their earlier version's rows go)."""
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
    changed = [
        d
        for d in Document.objects.filter(pk__in=list(built)).order_by("pk")
        if d.version != built[d.pk]
    ]
    build.store.delete_versions([(d.pk, built[d.pk]) for d in changed])
    return late + changed


def _run(
    job: IngestionJob,
    build: GenerationBuild,
    documents: QuerySet[Document],
    progress: Progress,
    cancel: threading.Event,
    pause: Callable[[], None] | None,
) -> PipelineResult:
    """The pipeline over the job's documents; a rebuild then takes in the documents
    uploaded while it ran, until none are left."""
    config = build_config(
        store_batch_size=job.store_batch_size, embed_batch_size=job.embed_batch_size
    )
    result: PipelineResult | None = None
    sources = document_sources(documents)
    built: dict[int, int] = {}  # document -> the version this run built
    while True:
        built.update((source.id, source.version) for source in sources)
        part = run_pipeline(
            documents=sources,
            embedder=build.embedder,
            store=build.store,
            chunker=build.chunker,
            config=config,
            progress=progress,
            cancel=cancel,
            vector_cache=build.cache,
            pause=pause,
        )
        result = part if result is None else result.merge(part)
        if job.kind != IngestionJob.Kind.REBUILD or part.cancelled:
            return result
        late = _late_documents(job, built, build)
        if not late:
            return result
        sources = document_sources(late)


def job_execute(
    job: IngestionJob,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    yield_to: Callable[[], None] | None = None,
) -> IngestionJob:
    """Run a claimed job to the end and record how it ended. ``cancel`` (set by the CLI's
    Ctrl-C, or by a cancel request seen in the database) stops it after a flush.
    ``yield_to`` is called between windows (the worker's: other users' jobs run there
    once this one has run ``JOB_WINDOW_SECONDS``)."""
    progress = Progress()
    cancel = cancel or threading.Event()
    reporter = Reporter(job, progress, cancel, on_progress)
    build: GenerationBuild | None = None
    result: PipelineResult | None = None
    error = ""
    log.info(
        "job %s started: %s of %s, %d documents",
        job.pk,
        job.kind,
        job.knowledge_base.slug,
        job.documents_total,
        extra=_job_fields(job),
    )
    # Heartbeat from the start: loading a model can take longer than the stale threshold.
    reporter.start()
    try:
        build = open_build(
            job.generation, reuse_other_generations=job.kind == IngestionJob.Kind.REBUILD
        )
        todo, done = _job_documents(job, build)
        if job.kind == IngestionJob.Kind.INGEST:
            build.mask_pending(todo, serving=_serving(job))
        _count_finished_work(job, done, progress)
        reporter.counting.set()
        result = _run(job, build, todo, progress, cancel, yield_to)
        if not result.cancelled:
            _index_vectors(job, build)
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
    if build is not None:
        _sweep(job, build)
    return _finish(job, build, result, error)


def _serving(job: IngestionJob) -> bool:
    """Whether the job writes into the generation that serves (or the first build)."""
    active = KnowledgeBase.objects.filter(pk=job.knowledge_base_id).values_list(
        "active_generation_id", flat=True
    )
    return active.first() in (None, job.generation_id)


def _sweep(job: IngestionJob, build: GenerationBuild) -> None:
    """Rows of versions replaced or failed for good during the job go (they are masked
    already, so a failure here costs disk only, until GC sweeps again)."""
    try:
        build.sweep()
    except Exception:
        log.exception("job %s: deleting replaced document versions failed", job.pk)


def _index_vectors(job: IngestionJob, build: GenerationBuild) -> None:
    """Build (or bring up to date) the ANN index while this job still holds the
    generation. A failure here leaves exact search, which is slower but right, so it does
    not fail the job."""
    try:
        outcome = build.index_vectors()
    except Exception:
        log.exception("job %s: building the vector index failed; searches stay exact", job.pk)
        return
    if outcome in ("built", "updated"):
        log.info("job %s: vector index %s (%d rows)", job.pk, outcome, build.rows())


@transaction.atomic
def _finish(
    job: IngestionJob,
    build: GenerationBuild | None,
    result: PipelineResult | None,
    error: str,
) -> IngestionJob:
    """The job's outcome on its row, and the generation's, in one transaction."""
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
    job.total_known = True  # nothing more will be counted
    job.eta_seconds = None if job.status != IngestionJob.Status.SUCCEEDED else 0.0
    job.finished_at = now
    job.heartbeat_at = now
    job.save()
    generation_build_ended(
        job=job,
        chunks=sum(result.indexed.values()) if result is not None else 0,
        store=build.store if build is not None else None,
    )
    kind, status = str(job.kind), str(job.status)
    fields = _job_fields(job)
    transaction.on_commit(lambda: _ended(kind, status, fields))
    return job


def _job_fields(job: IngestionJob) -> dict[str, object]:
    """What a structured log line of a job carries (RAGSTUDIO_LOG_FORMAT=json)."""
    fields: dict[str, object] = {
        "job": job.pk,
        "job_kind": str(job.kind),
        "job_status": str(job.status),
        "kb": job.knowledge_base.slug,
        "embedded": job.embedded,
        "persisted": job.persisted,
        "documents_failed": job.documents_failed,
    }
    if job.started_at and job.finished_at:
        fields["duration_ms"] = round((job.finished_at - job.started_at).total_seconds() * 1000)
    return fields


def _ended(kind: str, status: str, fields: dict[str, object]) -> None:
    metrics.JOBS_ENDED.labels(kind, status).inc()
    log.info(
        "job %s %s: %s chunks embedded, %s persisted",
        fields["job"],
        status,
        fields["embedded"],
        fields["persisted"],
        extra=fields,
    )
