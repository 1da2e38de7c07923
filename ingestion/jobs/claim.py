"""Claiming jobs. A job is claimed with a conditional update under a lock on its
generation: at most one job writes to a generation at a time (tantivy allows one writer
per index), a job whose heartbeat went stale is taken over, and a job that ran out of
attempts fails."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Max
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


# Queued jobs looked at per pick (the oldest first): enough to find every waiting user.
FAIR_SCAN = 2000
_NEVER = datetime.min.replace(tzinfo=UTC)


def _last_served(users: set[int | None]) -> dict[int | None, datetime]:
    """When each user's work last held a worker: the latest start or end of their jobs
    (now, while one runs). A user whose job just ran inside another's window counts as
    served then, not when the other's job started."""
    jobs = IngestionJob.objects.filter(started_at__isnull=False)
    served: dict[int | None, datetime] = {}

    def note(user_id: int | None, when: datetime | None) -> None:
        if when is not None and when > served.get(user_id, _NEVER):
            served[user_id] = when

    people = [u for u in users if u is not None]
    for user_id, started, finished in (
        jobs.filter(created_by_id__in=people)
        .values("created_by_id")
        .annotate(started=Max("started_at"), finished=Max("finished_at"))
        .values_list("created_by_id", "started", "finished")
    ):
        note(user_id, started)
        note(user_id, finished)
    if None in users:
        anonymous = jobs.filter(created_by__isnull=True).aggregate(
            started=Max("started_at"), finished=Max("finished_at")
        )
        note(None, anonymous["started"])
        note(None, anonymous["finished"])
    now = timezone.now()
    for user_id in jobs.filter(status=IngestionJob.Status.RUNNING).values_list(
        "created_by_id", flat=True
    ):
        if user_id in users:
            served[user_id] = now
    return served


def fair_candidates(excluding_users: Collection[int | None] = ()) -> list[int]:
    """Queued jobs in the order a free worker should try them: within a generation first
    in, first out (its oldest queued job only), and between generations the job of the
    user served longest ago first (round robin over users, by ``_last_served``; jobs
    without a user, from the command line or the system, count as one user). One user's
    hundred queued uploads then delay another's one file by one job, not a hundred.
    ``excluding_users``: users whose jobs are not candidates (a job yielding its worker
    yields to other users only)."""
    heads: dict[int, tuple[int, int | None, datetime]] = {}
    for pk, generation_id, user_id, created in (
        IngestionJob.objects.filter(status=IngestionJob.Status.QUEUED)
        .order_by("created_at", "pk")
        .values_list("pk", "generation_id", "created_by_id", "created_at")[:FAIR_SCAN]
    ):
        heads.setdefault(generation_id, (pk, user_id, created))
    heads = {g: head for g, head in heads.items() if head[1] not in excluding_users}
    if not heads:
        return []
    users = {user_id for _pk, user_id, _c in heads.values()}
    served = _last_served(users)
    ordered = sorted(
        heads.values(), key=lambda head: (served.get(head[1]) or _NEVER, head[2], head[0])
    )
    return [pk for pk, _user, _created in ordered]
