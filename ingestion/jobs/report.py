"""The reporter thread: a running job's counters, outcomes and heartbeat reach its row
every second, and a cancel request reaches the pipeline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from ingestion.models import IngestionJob
from ingestion.pipeline.progress import DocumentOutcome, Progress, ProgressSnapshot
from knowledge_bases.generations import version_show
from knowledge_bases.models import Document, DocumentVersion, KnowledgeBase

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds: counters reach the job row at least this often
ProgressCallback = Callable[[IngestionJob, ProgressSnapshot], None]


class Reporter(threading.Thread):
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
        # Set once the progress holds the whole job's counters (see _count_finished_work).
        self.counting = threading.Event()
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
        fields: dict[str, Any] = {"heartbeat_at": now}
        # Until the job has counted what earlier attempts finished, the row keeps their
        # counters (a resumed job would otherwise show zeros for a moment).
        if self.counting.is_set():
            self._sample(snap)
            fields.update(
                samples=self.samples,
                total=snap.total,
                total_known=snap.total_known,
                embedded=snap.embedded,
                persisted=snap.persisted,
                buffered=snap.buffered,
                skipped=snap.skipped,
                errors=snap.errors,
                retries=snap.retries,
                rate=round(snap.rate, 3),
                eta_seconds=None if snap.eta_seconds is None else round(snap.eta_seconds, 1),
                embedding=snap.embedding or {},
                documents_done=F("documents_done") + sum(1 for o in outcomes if o.ok),
                documents_failed=F("documents_failed") + sum(1 for o in outcomes if not o.ok),
            )
        updated = IngestionJob.objects.filter(
            pk=self.job.pk, worker=self.job.worker, status=IngestionJob.Status.RUNNING
        ).update(**fields)
        if not updated:
            return False, False  # taken over: outcomes belong to the new owner now
        failed = [o for o in outcomes if not o.ok]
        if failed:
            self._record_failures(failed)
        if self.write_documents and outcomes:
            self._record_outcomes(outcomes, now)
        cancel = IngestionJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
        return True, cancel

    def _record_failures(self, failed: list[DocumentOutcome]) -> None:
        """Which documents failed and why, on the job row (the job page lists them)."""
        job = IngestionJob.objects.select_for_update().only("failures").get(pk=self.job.pk)
        names = dict(
            Document.objects.filter(pk__in=[o.document_id for o in failed]).values_list(
                "pk", "original_filename"
            )
        )
        # A retried job may fail a document again: its latest reason replaces the earlier.
        by_document = {f["document_id"]: f for f in job.failures}
        for o in failed:
            if o.document_id in by_document or len(by_document) < IngestionJob.MAX_FAILURES:
                name = names.get(o.document_id, "")
                by_document[o.document_id] = {
                    "document_id": o.document_id,
                    "name": name,
                    "error": o.error[:2000],
                }
        IngestionJob.objects.filter(pk=self.job.pk).update(failures=list(by_document.values()))

    def _record_outcomes(self, outcomes: list[DocumentOutcome], now: datetime) -> None:
        """A document version whose rows are all stored becomes visible in the job's
        generation (replacing the version it showed before, in one step); document rows,
        which describe the generation that serves (or the first build), say so."""
        generation = self.job.generation
        active = (
            KnowledgeBase.objects.filter(pk=self.job.knowledge_base_id)
            .values_list("active_generation_id", flat=True)
            .first()
        )
        serving = active in (None, generation.pk)
        documents = {
            d.pk: d
            for d in Document.objects.filter(pk__in=[o.document_id for o in outcomes]).only(
                "pk", "version", "serving_version"
            )
        }
        for outcome in outcomes:
            document = documents.get(outcome.document_id)
            if document is None:
                continue  # deleted meanwhile
            latest = document.version == outcome.version
            if not outcome.ok:
                if latest:
                    Document.objects.filter(pk=document.pk).update(
                        status=Document.Status.FAILED,
                        error_message=outcome.error[:2000],
                        updated_at=now,
                    )
                continue
            version_show(
                generation,
                document.pk,
                outcome.version,
                replaces=document.serving_version if serving else 0,
            )
            DocumentVersion.objects.filter(document=document, number=outcome.version).update(
                chunk_count=outcome.chunk_count,
                chunks_embedded=outcome.chunk_count - outcome.reused,
                indexed_at=now,
            )
            if serving:
                fields: dict[str, Any] = {
                    "serving_version": outcome.version,
                    "chunk_count": outcome.chunk_count,
                    "language": outcome.language,
                    "updated_at": now,
                }
                if latest:
                    fields.update(status=Document.Status.INDEXED, error_message="")
                Document.objects.filter(pk=document.pk).update(**fields)
