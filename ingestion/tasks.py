"""django-q2 tasks. They take ids, claim their row, call a service, and are safe to run
twice (delivery is at least once)."""

from __future__ import annotations

from django.db import close_old_connections

from ingestion.jobs import jobs_reap_stale, run_job_and_queue
from ingestion.models import Source
from ingestion.services.sources import source_sync, source_sync_request, sources_due


def run_ingestion_job(job_id: int) -> list[int]:
    close_old_connections()
    try:
        return run_job_and_queue(int(job_id))
    finally:
        close_old_connections()


def reap_stale_jobs() -> dict[str, int]:
    return jobs_reap_stale()


def sync_source(source_id: int) -> dict[str, object] | None:
    """Sync one source (a second delivery finds it claimed and ends)."""
    close_old_connections()
    try:
        result = source_sync(source_id=int(source_id))
        return result.stats() if result is not None else None
    finally:
        close_old_connections()


def sync_due_sources() -> list[int]:
    """Every minute: a task for each source whose scheduled sync is due."""
    due = sources_due()
    for source in Source.objects.filter(pk__in=due):
        source_sync_request(source=source)
    return due
