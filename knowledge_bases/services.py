"""Writes to knowledge bases and generations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ingestion.embedders import EmbedderSpecError, parse_spec
from knowledge_bases.models import Generation, GenerationEvent, KnowledgeBase
from ragstudio.env import rag_settings
from ragstudio.errors import Conflict, ValidationError

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
LOCAL_MAX_CHUNK = 254  # 256 model tokens less [CLS] and [SEP]


def embedder_dimensions(spec: str) -> tuple[str, int, int | None]:
    """(normalized spec, dimensions, max chunk tokens) or ValidationError."""
    try:
        parsed = parse_spec(spec)
    except EmbedderSpecError as exc:
        raise ValidationError(str(exc), {"field": "embedder"}) from None
    if parsed.provider == "local":
        return str(parsed), 384, LOCAL_MAX_CHUNK
    if parsed.provider == "openai":
        from ingestion.embedders.openai_compat import KNOWN_DIMENSIONS

        dims = (
            parsed.dimensions
            or rag_settings()["OPENAI_DIMENSIONS"]
            or KNOWN_DIMENSIONS.get(parsed.model)
        )
        if not dims:
            raise ValidationError(
                f"the dimensions of {parsed.model!r} are unknown: write 'openai:{parsed.model}@N'",
                {"field": "embedder"},
            )
        return str(parsed), int(dims), 8000
    from fastembed import TextEmbedding

    for model in TextEmbedding.list_supported_models():
        if model["model"] == parsed.model:
            return str(parsed), int(model["dim"]), None
    raise ValidationError(f"fastembed has no model named {parsed.model!r}", {"field": "embedder"})


def _validate_chunking(size: int, overlap: int, max_chunk: int | None) -> None:
    if size < 16:
        raise ValidationError("chunk size must be at least 16 tokens", {"field": "chunk_size"})
    if max_chunk is not None and size > max_chunk:
        raise ValidationError(
            f"chunk size must be at most {max_chunk} tokens for this embedder",
            {"field": "chunk_size"},
        )
    if overlap < 0 or overlap > size // 2:
        raise ValidationError(
            f"chunk overlap must be between 0 and half the chunk size ({size // 2})",
            {"field": "chunk_overlap"},
        )


@transaction.atomic
def knowledge_base_create(
    *,
    slug: str,
    name: str,
    owner: Any = None,
    description: str = "",
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
) -> KnowledgeBase:
    slug = (slug or "").strip().lower()
    if not SLUG.match(slug):
        raise ValidationError(
            "slug must be 1-64 lowercase letters, digits or hyphens, not starting or ending "
            "with a hyphen",
            {"field": "slug"},
        )
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationError("name must be 1 to 200 characters", {"field": "name"})
    spec, dims, max_chunk = embedder_dimensions(embedder or rag_settings()["EMBEDDER"])
    size = chunk_size if chunk_size is not None else rag_settings()["CHUNK_SIZE"]
    if max_chunk is not None and chunk_size is None:
        size = min(size, max_chunk)
    overlap = (
        chunk_overlap
        if chunk_overlap is not None
        else min(rag_settings()["CHUNK_OVERLAP"], size // 2)
    )
    _validate_chunking(size, overlap, max_chunk)
    if KnowledgeBase.objects.filter(slug=slug).exists():
        raise Conflict(f"a knowledge base with slug {slug!r} already exists", {"field": "slug"})
    try:
        with transaction.atomic():
            return KnowledgeBase.objects.create(
                slug=slug,
                name=name,
                description=description or "",
                owner=owner,
                embedder=spec,
                embedding_dimensions=dims,
                chunk_size=size,
                chunk_overlap=overlap,
            )
    except IntegrityError:
        raise Conflict(f"a knowledge base with slug {slug!r} already exists") from None


def generation_paths(kb_id: int, number: int) -> tuple[str, Path]:
    """LanceDB table name and tantivy directory of a generation (by KB id: slugs change)."""
    return f"kb{kb_id}_g{number}", Path(rag_settings()["BM25_DIR"]) / f"kb{kb_id}" / f"g{number}"


def generation_event_record(
    generation: Generation, from_status: str, to_status: str, actor: Any, note: str = ""
) -> None:
    GenerationEvent.objects.create(
        generation=generation,
        from_status=from_status,
        to_status=to_status,
        actor=actor if getattr(actor, "pk", None) else None,
        note=note,
    )


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
    spec, dims, max_chunk = embedder_dimensions(embedder or kb.embedder)
    size = chunk_size if chunk_size is not None else kb.chunk_size
    overlap = chunk_overlap if chunk_overlap is not None else min(kb.chunk_overlap, size // 2)
    _validate_chunking(size, overlap, max_chunk)
    last = kb.generations.order_by("-number").values_list("number", flat=True).first() or 0
    number = last + 1
    table, bm25 = generation_paths(kb.pk, number)
    generation = Generation.objects.create(
        knowledge_base=kb,
        number=number,
        embedder=spec,
        dimensions=dims,
        chunk_size=size,
        chunk_overlap=overlap,
        table_name=table,
        bm25_path=str(bm25),
    )
    generation_event_record(generation, "", Generation.Status.BUILDING, actor, note)
    return generation


@transaction.atomic
def generation_for_ingest(*, kb: KnowledgeBase, actor: Any = None) -> Generation:
    """Where incremental uploads go: the active generation, or the first one while it is
    still being built (created here on the very first upload)."""
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
    if kb.active_generation_id:
        return kb.active_generation  # type: ignore[return-value]
    first = kb.generations.filter(number=1, status=Generation.Status.BUILDING).first()
    if first is not None:
        return first
    if kb.generations.exists():
        raise Conflict(
            "this knowledge base has no active generation: promote or roll back one first"
        )
    return generation_create(kb=kb, actor=actor, note="first ingest")


@transaction.atomic
def generation_activate_first(*, generation: Generation, actor: Any = None) -> bool:
    """Make the first generation active once its first job has finished."""
    kb = KnowledgeBase.objects.select_for_update().get(pk=generation.knowledge_base_id)
    generation.refresh_from_db()
    if kb.active_generation_id or generation.status != Generation.Status.BUILDING:
        return False
    now = timezone.now()
    generation.status = Generation.Status.ACTIVE
    generation.ready_at = generation.ready_at or now
    generation.activated_at = now
    generation.save(update_fields=["status", "ready_at", "activated_at"])
    kb.active_generation = generation
    kb.save(update_fields=["active_generation", "updated_at"])
    generation_event_record(
        generation, Generation.Status.BUILDING, Generation.Status.ACTIVE, actor, "first build"
    )
    return True
