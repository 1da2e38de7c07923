"""The reaper (every minute): jobs whose worker died go back to the queue or fail;
queued jobs whose task was lost get one again."""

from __future__ import annotations

from datetime import timedelta

from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from ingestion.jobs.claim import stale_cutoff
from ingestion.models import IngestionJob
from ingestion.services.queue import enqueue_job
from ragstudio.env import rag_settings


def jobs_reap_stale() -> dict[str, int]:
    """Running jobs whose worker stopped heartbeating go back to the queue (their writes
    are idempotent) or fail after too many attempts; queued jobs get a task again."""
    cutoff = stale_cutoff()
    requeued = failed = 0
    requeued_ids: list[int] = []
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
            elif updated.update(status=IngestionJob.Status.QUEUED, worker="", buffered=0):
                requeued += 1
                requeued_ids.append(job.pk)
    # Queued jobs whose generation is free and whose own task should have started by now
    # (lost by a broker restart, or refused while the generation was busy) get a task.
    busy = IngestionJob.objects.filter(
        status=IngestionJob.Status.RUNNING, heartbeat_at__gte=cutoff
    ).values("generation_id")
    # A job just requeued has no task at all (its worker died with it): it gets one now,
    # whatever its age.
    queued = list(
        IngestionJob.objects.filter(status=IngestionJob.Status.QUEUED)
        .filter(Q(created_at__lt=timezone.now() - timedelta(seconds=30)) | Q(pk__in=requeued_ids))
        .exclude(generation_id__in=busy)
        .values_list("pk", flat=True)
    )
    for job_id in queued:
        enqueue_job(job_id)
    close_old_connections()
    return {"requeued": requeued, "failed": failed, "enqueued": len(queued)}
