"""Generations being built: created, recorded as they fill, then ready or failed (a
rebuild) or active at once (the first generation of a knowledge base)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from knowledge_bases.generations import states
from knowledge_bases.generations.build_settings import language_resolve, rebuild_settings_resolve
from knowledge_bases.generations.storage import generation_store, table_name
from knowledge_bases.generations.versions import masks_forget
from knowledge_bases.models import Generation, KnowledgeBase
from ragstudio.core.errors import Conflict

S = Generation.Status


@transaction.atomic
def generation_create(
    *,
    kb: KnowledgeBase,
    actor: Any = None,
    note: str = "",
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    language: str | None = None,
) -> Generation:
    """A new building generation with the KB's settings, or the given ones (validated)."""
    KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
    built = rebuild_settings_resolve(
        kb=kb, embedder=embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap, actor=actor
    )
    setting, resolved = language_resolve(kb, language)
    last = kb.generations.order_by("-number").values_list("number", flat=True).first() or 0
    generation = Generation.objects.create(
        knowledge_base=kb,
        number=last + 1,
        embedder=built.embedder,
        dimensions=built.dimensions,
        chunk_size=built.chunk_size,
        chunk_overlap=built.chunk_overlap,
        language=resolved,
        language_setting=setting,
        table_name=table_name(kb.pk, last + 1),
    )
    states.created(generation, actor=actor, note=note)
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


def generation_imported(*, generation: Generation, status: str, actor: Any = None) -> None:
    """A generation written whole from an archive (kb import) takes the status it had."""
    states.imported(generation, status=status, actor=actor, note="imported from an archive")


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
    states.transition(generation, S.ACTIVE, actor=actor, note="first build")
    kb.active_generation = generation
    kb.save(update_fields=["active_generation", "updated_at"])
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
    locked = Generation.objects.select_for_update().get(pk=generation.pk)
    if error:
        states.transition(locked, S.FAILED, actor=actor, note=note, error_message=error)
    else:
        states.transition(
            locked, S.READY, actor=actor, note=note, chunk_count=chunks, vector_count=vectors
        )
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
    states.transition(generation, S.BUILDING, actor=actor, note="retry", error_message="")


def generation_documents_delete(*, generation: Generation, document_ids: list[int]) -> int:
    """Remove documents' rows from a generation's stores and record what it then holds;
    returns that count."""
    store = generation_store(generation)
    store.delete_documents(document_ids)
    masks_forget(generation, document_ids)
    remaining = store.vectors.count()
    generation_counts_record(generation=generation, chunks=remaining, vectors=remaining)
    return remaining
