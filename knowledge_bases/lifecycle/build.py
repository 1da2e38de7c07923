"""Generations being built: created, recorded as they fill, then ready or failed (a
rebuild) or active at once (the first generation of a knowledge base)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from knowledge_bases.build_settings import rebuild_settings_resolve
from knowledge_bases.lifecycle.events import generation_event_record
from knowledge_bases.models import Generation, KnowledgeBase
from ragstudio.env import rag_settings
from ragstudio.errors import Conflict

S = Generation.Status


def generation_paths(kb_id: int, number: int) -> tuple[str, Path]:
    """LanceDB table name and tantivy directory of a generation (by KB id: slugs change)."""
    return f"kb{kb_id}_g{number}", Path(rag_settings()["BM25_DIR"]) / f"kb{kb_id}" / f"g{number}"


@transaction.atomic
def generation_create(
    *,
    kb: KnowledgeBase,
    actor: Any = None,
    note: str = "",
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
) -> Generation:
    """A new building generation with the KB's settings, or the given ones (validated)."""
    KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
    built = rebuild_settings_resolve(
        kb=kb, embedder=embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap, actor=actor
    )
    last = kb.generations.order_by("-number").values_list("number", flat=True).first() or 0
    number = last + 1
    table, bm25 = generation_paths(kb.pk, number)
    generation = Generation.objects.create(
        knowledge_base=kb,
        number=number,
        embedder=built.embedder,
        dimensions=built.dimensions,
        chunk_size=built.chunk_size,
        chunk_overlap=built.chunk_overlap,
        table_name=table,
        bm25_path=str(bm25),
    )
    generation_event_record(generation, "", S.BUILDING, actor, note)
    return generation


@transaction.atomic
def generation_for_ingest(*, kb: KnowledgeBase, actor: Any = None) -> Generation:
    """Where incremental uploads go: the active generation, or the first one while it is
    still being built (created here on the very first upload)."""
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
    if kb.active_generation_id:
        return kb.active_generation  # type: ignore[return-value]
    first = kb.generations.filter(number=1, status=S.BUILDING).first()
    if first is not None:
        return first
    if kb.generations.exists():
        raise Conflict(
            "this knowledge base has no active generation: promote or roll back one first"
        )
    return generation_create(kb=kb, actor=actor, note="first ingest")


def generation_fingerprint_record(*, generation: Generation, fingerprint: str) -> None:
    """The model that wrote the generation's first vectors (later writes must match)."""
    Generation.objects.filter(pk=generation.pk, embedder_fingerprint="").update(
        embedder_fingerprint=fingerprint
    )


def generation_counts_record(*, generation: Generation, chunks: int, vectors: int) -> None:
    """What the database expects the stores to hold (checked before promotion)."""
    Generation.objects.filter(pk=generation.pk).update(chunk_count=chunks, vector_count=vectors)


@transaction.atomic
def generation_activate_first(*, generation: Generation, actor: Any = None) -> bool:
    """Make the first generation active once its first job has finished."""
    kb = KnowledgeBase.objects.select_for_update().get(pk=generation.knowledge_base_id)
    generation.refresh_from_db()
    if kb.active_generation_id or generation.status != S.BUILDING:
        return False
    now = timezone.now()
    generation.status = S.ACTIVE
    generation.ready_at = generation.ready_at or now
    generation.activated_at = now
    generation.save(update_fields=["status", "ready_at", "activated_at"])
    kb.active_generation = generation
    kb.save(update_fields=["active_generation", "updated_at"])
    generation_event_record(generation, S.BUILDING, S.ACTIVE, actor, "first build")
    return True


@transaction.atomic
def generation_build_finished(
    *,
    generation: Generation,
    error: str,
    chunks: int = 0,
    vectors: int = 0,
    actor: Any = None,
    note: str = "",
) -> None:
    """A rebuild ended: its generation becomes ready, with the counts the database expects
    (checked against both stores before promotion), or failed with the reason."""
    if error:
        Generation.objects.filter(pk=generation.pk).update(status=S.FAILED, error_message=error)
        generation_event_record(generation, S.BUILDING, S.FAILED, actor, note)
    else:
        Generation.objects.filter(pk=generation.pk).update(
            status=S.READY, ready_at=timezone.now(), chunk_count=chunks, vector_count=vectors
        )
        generation_event_record(generation, S.BUILDING, S.READY, actor, note)
    generation.refresh_from_db()


@transaction.atomic
def generation_build_resume(*, generation: Generation, actor: Any = None) -> None:
    """A failed build goes back to building, for its job to be retried (what it wrote
    stays and is reused)."""
    generation = Generation.objects.select_for_update().get(pk=generation.pk)
    if generation.status == S.BUILDING:
        return
    if generation.status != S.FAILED or generation.files_deleted_at is not None:
        raise Conflict(
            f"generation {generation.number} is {generation.status}: only a failed build "
            "whose files remain can be resumed"
        )
    generation.status = S.BUILDING
    generation.error_message = ""
    generation.save(update_fields=["status", "error_message"])
    generation_event_record(generation, S.FAILED, S.BUILDING, actor, "retry")
