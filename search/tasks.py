"""django-q2 tasks of search (safe to run twice: delivery is at least once)."""

from __future__ import annotations

from ingestion.jobs import run_yielding
from search.evaluation import evaluation_run_execute, evaluation_runs_abandoned_fail
from search.models import EvaluationRun


def run_evaluation(run_id: int) -> str:
    """A queued evaluation run; every JOB_WINDOW_SECONDS it lets a waiting ingestion job
    of another user run first, so a run of a thousand queries holds nobody's upload."""
    return run_yielding("evaluation run", EvaluationRun, run_id, evaluation_run_execute)


def fail_abandoned_evaluations() -> int:
    """Hourly: runs whose worker died (or that no worker took for a day) fail."""
    return evaluation_runs_abandoned_fail()
