"""Claiming jobs. A job is claimed with a conditional update under a lock on its
generation: at most one job writes to a generation at a time (tantivy allows one writer
per index), a job whose heartbeat went stale is taken over, and a job that ran out of
attempts fails."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from ingestion.models import IngestionJob
from knowledge_bases.models import Generation
from ragstudio.env import rag_settings


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_cutoff() -> datetime:
    """A running job whose heartbeat is older than this has lost its worker."""
    return timezone.now() - timedelta(seconds=rag_settings()["HEARTBEAT_STALE_SECONDS"])


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
        cutoff = stale_cutoff()
        if job.status not in IngestionJob.LIVE:
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
