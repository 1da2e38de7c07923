"""Garbage collection by retention, then compaction of the active table."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ingestion.models import IngestionJob
from knowledge_bases.generations import states
from knowledge_bases.generations.storage import (
    generation_files_delete,
    generation_store,
    storage_cleanup_run,
    uploads_sweep,
)
from knowledge_bases.generations.swap import locked_kb, rollback_candidate
from knowledge_bases.generations.versions import versions_sweep
from knowledge_bases.models import Generation, KnowledgeBase
from ragstudio.env import rag_settings

log = logging.getLogger(__name__)
S = Generation.Status
# Versions younger than this survive compaction, so a search already reading one does not
# fail (pruning every old version breaks readers still on one).
KEEP_VERSIONS_FOR = timedelta(minutes=10)


def _busy(kb: KnowledgeBase) -> Any:
    """The ids of the KB's generations a queued or running job writes (a subquery)."""
    return IngestionJob.objects.filter(knowledge_base=kb, status__in=IngestionJob.LIVE).values(
        "generation_id"
    )


def idle_generations(kb: KnowledgeBase) -> Any:
    """The KB's generations no queued or running job writes."""
    return Generation.objects.filter(knowledge_base=kb).exclude(pk__in=_busy(kb))


def generations_gc(*, kb: KnowledgeBase, actor: Any = None, now: Any = None) -> dict[str, Any]:
    """Collect generations past retention, then delete their files, then compact the active
    table (and the ready and archived ones no job writes, dropping files no version still
    needs). Kept: the active one, any a queued or running job writes to, ready and building
    ones, ``kb.retention`` archived ones (the one a rollback would return to first, then
    the newest), and archived ones younger than the minimum age."""
    now = now or timezone.now()
    min_age = timedelta(seconds=rag_settings()["GC_MIN_AGE_SECONDS"])
    with transaction.atomic():
        kb = locked_kb(kb)
        busy = _busy(kb)
        undo, _rest = rollback_candidate(kb)
        archived = sorted(
            Generation.objects.filter(knowledge_base=kb, status=S.ARCHIVED).exclude(pk__in=busy),
            key=lambda g: (undo is None or g.pk != undo.pk, -g.number),
        )
        doomed = [
            g
            for g in archived[kb.retention :]
            if g.archived_at is None or now - g.archived_at >= min_age
        ]
        doomed += list(
            Generation.objects.filter(
                knowledge_base=kb, status=S.FAILED, created_at__lte=now - min_age
            ).exclude(pk__in=busy)
        )
        for generation in doomed:
            states.transition(generation, S.COLLECTED, actor=actor, note="gc", now=now)
    # After the commit: files of every collected generation whose files are not yet gone,
    # including those a crash left behind last time.
    deleted = []
    pending = Generation.objects.filter(
        knowledge_base=kb, status=S.COLLECTED, files_deleted_at__isnull=True
    )
    for generation in pending:
        generation_files_delete(generation)
        deleted.append(generation.number)
    # Rows of document versions no search will see again, where no job writes (a job
    # sweeps its own generation when it ends; this finishes what a crash left).
    swept = 0
    idle = idle_generations(kb).filter(masks__isnull=False)
    for generation in idle.exclude(status=S.COLLECTED).distinct():
        swept += versions_sweep(generation, generation_store(generation))
    compacted = None
    kb.refresh_from_db()
    if kb.active_generation is not None:
        active = generation_store(kb.active_generation)
        before = active.vectors.fragment_count()
        active.vectors.optimize(keep_versions_for=KEEP_VERSIONS_FOR)
        compacted = {
            "generation": kb.active_generation.number,
            "fragments_before": before,
            "fragments_after": active.vectors.fragment_count(),
        }
    # A built generation's table was compacted before its index was built; the files from
    # before (as much again) go once no search can still be reading them. The same for
    # the rest of what waits to serve, where no job writes.
    waiting = idle_generations(kb).filter(status__in=(S.READY, S.ARCHIVED))
    for generation in waiting.exclude(pk=kb.active_generation_id):
        generation_store(generation).vectors.optimize(keep_versions_for=KEEP_VERSIONS_FOR)
    return {
        "collected": sorted(g.number for g in doomed),
        "files_deleted": sorted(deleted),
        "compacted": compacted,
        "versions_swept": swept,
    }


def generations_gc_all() -> dict[str, Any]:
    """The scheduled GC over every knowledge base, then files left by deletes."""
    results: dict[str, Any] = {}
    for kb in KnowledgeBase.objects.filter(~Q(generations=None)).distinct():
        try:
            results[kb.slug] = generations_gc(kb=kb)
        except Exception:  # one broken KB must not stop the others
            log.exception("GC failed for knowledge base %s", kb.slug)
    results["files_of_deleted_knowledge_bases"] = storage_cleanup_run()
    results["files_left_by_crashes"] = uploads_sweep()
    return results
