"""The periodic tasks, created once after migrations (kept apart from the tasks, so
start-up does not import the job machinery)."""

from __future__ import annotations

from typing import Any

SCHEDULES = [
    # (name, function, minutes)
    ("ragstudio: reap stale ingestion jobs", "ingestion.tasks.reap_stale_jobs", 1),
    ("ragstudio: collect old generations", "knowledge_bases.tasks.collect_generations", 60),
    ("ragstudio: sync sources that are due", "ingestion.tasks.sync_due_sources", 1),
    ("ragstudio: delete old audit events", "knowledge_bases.tasks.prune_audit_events", 24 * 60),
    ("ragstudio: delete old export archives", "knowledge_bases.tasks.prune_transfers", 60),
    ("ragstudio: fail abandoned evaluation runs", "search.tasks.fail_abandoned_evaluations", 60),
    ("ragstudio: prune rebuild plans", "knowledge_bases.tasks.prune_rebuild_plans", 60),
]


def ensure_schedules(**_kwargs: Any) -> None:
    """Create the periodic tasks once (post_migrate), idempotently."""
    from django_q.models import Schedule  # needs the app registry: imported when run

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
