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


def _broker_empty() -> bool:
    """No task waits in the broker (an unreadable broker counts as empty: a task too many
    is harmless, tasks are safe to run twice)."""
    from django_q.brokers import get_broker

    try:
        return int(get_broker().queue_size() or 0) == 0
    except Exception:
        return True


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
    # A job just requeued has no task at all (its worker died with it): it gets one now.
    # Other queued jobs need one only when their tasks were lost (a broker restart): a free
    # worker takes any queued job (the fairest), and a worker that ends a job takes the next,
    # so while a job runs or a task waits in the broker every queued job will be reached.
    # Giving each waiting job a task every minute piled copies up behind a long job.
    running = IngestionJob.objects.filter(
        status=IngestionJob.Status.RUNNING, heartbeat_at__gte=cutoff
    )
    stalled = not running.exists() and _broker_empty()
    waiting = IngestionJob.objects.filter(status=IngestionJob.Status.QUEUED)
    if stalled:
        waiting = waiting.filter(
            Q(created_at__lt=timezone.now() - timedelta(seconds=30)) | Q(pk__in=requeued_ids)
        )
    else:
        waiting = waiting.filter(pk__in=requeued_ids)
    queued = list(
        waiting.exclude(generation_id__in=running.values("generation_id")).values_list(
            "pk", flat=True
        )
    )
    for job_id in queued:
        enqueue_job(job_id)
    close_old_connections()
    return {"requeued": requeued, "failed": failed, "enqueued": len(queued)}
