"""django-q2 tasks of search (safe to run twice: delivery is at least once)."""

from __future__ import annotations

from django.db import close_old_connections

from ingestion.jobs import JobYield
from search.evaluation import evaluation_run_execute, evaluation_runs_abandoned_fail
from search.models import EvaluationRun


def run_evaluation(run_id: int) -> str:
    """A queued evaluation run; every JOB_WINDOW_SECONDS it lets a waiting ingestion job
    of another user run first, so a run of a thousand queries holds nobody's upload."""
    close_old_connections()
    try:
        user = EvaluationRun.objects.filter(pk=run_id).values_list("created_by_id", flat=True)
        pause = JobYield(f"evaluation run {run_id}", frozenset(user))
        return evaluation_run_execute(int(run_id), pause=pause)
    finally:
        close_old_connections()


def fail_abandoned_evaluations() -> int:
    """Hourly: runs whose worker died (or that no worker took for a day) fail."""
    return evaluation_runs_abandoned_fail()
