"""django-q2 tasks. They take ids, claim their row, call a service, and are safe to run
twice (delivery is at least once)."""

from __future__ import annotations

from django.db import close_old_connections

from ingestion.jobs import jobs_reap_stale, run_job_and_queue


def run_ingestion_job(job_id: int) -> list[int]:
    close_old_connections()
    try:
        return run_job_and_queue(int(job_id))
    finally:
        close_old_connections()


def reap_stale_jobs() -> dict[str, int]:
    return jobs_reap_stale()
