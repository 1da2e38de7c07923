"""django-q2 tasks. They take ids, claim their row, call a service, and are safe to run
twice (delivery is at least once)."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections


def run_ingestion_job(job_id: int) -> list[int]:
    from ingestion.jobs import run_job_and_queue

    close_old_connections()
    try:
        return run_job_and_queue(int(job_id))
    finally:
        close_old_connections()


def reap_stale_jobs() -> dict[str, int]:
    from ingestion.jobs import jobs_reap_stale

    return jobs_reap_stale()


def collect_generations() -> dict[str, object]:
    from knowledge_bases.lifecycle import generations_gc_all

    return generations_gc_all()


SCHEDULES = [
    # (name, function, minutes)
    ("ragstudio: reap stale ingestion jobs", "ingestion.tasks.reap_stale_jobs", 1),
    ("ragstudio: collect old generations", "ingestion.tasks.collect_generations", 60),
]


def ensure_schedules(**_kwargs: Any) -> None:
    """Create the periodic tasks once (post_migrate), idempotently."""
    from django_q.models import Schedule

    for name, func, minutes in SCHEDULES:
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )
