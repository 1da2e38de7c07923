"""django-q2 tasks of knowledge bases (safe to run twice: delivery is at least once)."""

from __future__ import annotations

from django.db import close_old_connections

from ingestion.jobs import run_yielding
from knowledge_bases.models import RebuildPlanRun
from knowledge_bases.services import (
    audit_events_prune,
    generations_gc_all,
    rebuild_plan_execute,
    rebuild_plans_prune,
)
from knowledge_bases.services.limits import rate_counters_prune
from knowledge_bases.services.transfers import transfer_run, transfers_prune


def collect_generations() -> dict[str, object]:
    """The scheduled GC of every knowledge base's generations."""
    return generations_gc_all()


def prune_audit_events() -> int:
    """The daily deletion of audit events past RAGSTUDIO_AUDIT_RETENTION_DAYS."""
    return audit_events_prune()


def run_transfer(transfer_id: int) -> str:
    """An export or an import (knowledge_bases/services/transfers.py)."""
    close_old_connections()
    try:
        return transfer_run(int(transfer_id))
    finally:
        close_old_connections()


def prune_transfers() -> int:
    """Export archives past RAGSTUDIO_EXPORT_RETENTION_HOURS, leftover uploads, and the
    rate limits' counters of minutes past."""
    return transfers_prune() + rate_counters_prune()


def run_rebuild_plan(plan_id: int) -> str:
    """A rebuild's plan (it reads every document); it lets other users' waiting jobs run
    between its windows, as a job does."""
    return run_yielding("rebuild plan", RebuildPlanRun, plan_id, rebuild_plan_execute)


def prune_rebuild_plans() -> int:
    """Hourly: plans whose worker died fail; plans a day old go."""
    return rebuild_plans_prune()
