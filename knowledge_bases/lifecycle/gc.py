"""Garbage collection by retention, then compaction of the active table."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ingestion.models import IngestionJob
from knowledge_bases.engines import (
    bm25_remote_uri,
    generation_store,
    storage_options,
    upload_remote_uri,
)
from knowledge_bases.lifecycle.events import generation_event_record
from knowledge_bases.lifecycle.swap import locked_kb
from knowledge_bases.models import Generation, KnowledgeBase, StorageCleanup
from ragstudio.env import rag_settings
from search.stores.generation import drop_files

log = logging.getLogger(__name__)
S = Generation.Status
# Versions younger than this survive compaction, so a search already reading one does not
# fail (pruning to zero breaks concurrent readers, measured).
KEEP_VERSIONS_FOR = timedelta(minutes=10)


def generations_gc(*, kb: KnowledgeBase, actor: Any = None, now: Any = None) -> dict[str, Any]:
    """Collect generations past retention, then delete their files, then compact the active
    table. Kept: the active one, any a queued or running job writes to, ready and building
    ones, the newest ``kb.retention`` archived, and archived ones younger than the minimum
    age."""
    now = now or timezone.now()
    min_age = timedelta(seconds=rag_settings()["GC_MIN_AGE_SECONDS"])
    with transaction.atomic():
        kb = locked_kb(kb)
        busy = IngestionJob.objects.filter(knowledge_base=kb, status__in=IngestionJob.LIVE).values(
            "generation_id"
        )
        archived = list(
            Generation.objects.filter(knowledge_base=kb, status=S.ARCHIVED)
            .exclude(pk__in=busy)
            .order_by("-number")
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
            previous = generation.status
            Generation.objects.filter(pk=generation.pk).update(status=S.COLLECTED, collected_at=now)
            generation_event_record(generation, previous, S.COLLECTED, actor, "gc")
    # After the commit: files of every collected generation whose files are not yet gone,
    # including those a crash left behind last time.
    deleted = []
    pending = Generation.objects.filter(
        knowledge_base=kb, status=S.COLLECTED, files_deleted_at__isnull=True
    )
    for generation in pending:
        generation_store(generation).drop()  # the LanceDB table and the tantivy directory
        Generation.objects.filter(pk=generation.pk).update(files_deleted_at=timezone.now())
        deleted.append(generation.number)
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
    return {
        "collected": sorted(g.number for g in doomed),
        "files_deleted": sorted(deleted),
        "compacted": compacted,
    }


@transaction.atomic
def knowledge_base_files_forget(*, kb: KnowledgeBase) -> list[int]:
    """Record every file of a knowledge base for deletion (its generations' tables, its
    tantivy and upload directories), in the transaction that deletes its rows; the files go
    after the commit (``storage_cleanup_run``)."""
    cfg = rag_settings()
    rows = [
        StorageCleanup(lancedb_uri=cfg["LANCEDB_URI"], table_name=g.table_name)
        for g in kb.generations.filter(files_deleted_at__isnull=True)
    ]
    rows.append(StorageCleanup(path=str(Path(cfg["BM25_DIR"]) / f"kb{kb.pk}")))
    rows.append(StorageCleanup(path=str(Path(cfg["UPLOAD_DIR"]) / f"kb{kb.pk}")))
    if cfg["STORAGE_URI"]:  # the shared copies (other hosts' caches are only caches)
        rows.append(StorageCleanup(remote=bm25_remote_uri(kb.pk)))
        rows.append(StorageCleanup(remote=upload_remote_uri(f"kb{kb.pk}")))
    return [row.pk for row in StorageCleanup.objects.bulk_create(rows)]


def storage_cleanup_run(*, ids: list[int] | None = None) -> int:
    """Delete recorded files, then their records (all of them, or these). Idempotent: a
    crash half-way leaves records that the next run finishes."""
    rows = StorageCleanup.objects.order_by("pk")
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    done = 0
    for row in rows:
        try:
            drop_files(
                lancedb_uri=row.lancedb_uri,
                table_name=row.table_name,
                path=row.path,
                remote=row.remote,
                storage_options=storage_options(),
            )
        except Exception:  # one stuck file must not keep the others
            log.exception("could not delete %s", row)
            continue
        StorageCleanup.objects.filter(pk=row.pk).delete()
        done += 1
    return done


def generations_gc_all() -> dict[str, Any]:
    """The scheduled GC over every knowledge base, then files left by deletes."""
    results: dict[str, Any] = {}
    for kb in KnowledgeBase.objects.filter(~Q(generations=None)).distinct():
        try:
            results[kb.slug] = generations_gc(kb=kb)
        except Exception:  # one broken KB must not stop the others
            log.exception("GC failed for knowledge base %s", kb.slug)
    results["files_of_deleted_knowledge_bases"] = storage_cleanup_run()
    return results
