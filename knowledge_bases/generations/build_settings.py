"""The settings a generation is built with (embedder, chunking), resolved and validated in
one place for new knowledge bases and for rebuilds."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from ingestion.embedders import EmbedderSpecError, describe
from knowledge_bases.models import Document
from ragstudio.core import languages
from ragstudio.core.bounds import CHUNK_OVERLAP, CHUNK_SIZE
from ragstudio.core.errors import Forbidden, ValidationError
from ragstudio.env import rag_settings


@dataclass(frozen=True)
class BuildSettings:
    embedder: str  # normalized spec
    dimensions: int
    chunk_size: int
    chunk_overlap: int


def embedder_permitted(spec: str, actor: Any) -> bool:
    """Whether ``actor`` may build with this embedder: staff and the operator (no actor:
    the CLI) may use any; other users those RAGSTUDIO_EMBEDDERS_FOR_USERS lists (default
    the bundled model's builds, "local" and "local-fast": another model may download
    gigabytes onto the workers or bill the operator's API key)."""
    if actor is None or getattr(actor, "is_staff", False):
        return True
    return any(fnmatch.fnmatchcase(spec, p) for p in rag_settings()["EMBEDDERS_FOR_USERS"])


def build_settings_resolve(
    *,
    embedder: str | None,
    chunk_size: int | None,
    chunk_overlap: int | None,
    defaults: BuildSettings | None = None,
    actor: Any = None,
) -> BuildSettings:
    """The given settings, the rest from ``defaults`` (a KB's, for a rebuild) or from
    settings (a new KB); ValidationError naming the field when they do not fit, Forbidden
    for an embedder the actor may not choose."""
    default_embedder = defaults.embedder if defaults else rag_settings()["EMBEDDER"]
    try:
        info = describe(
            embedder or default_embedder,
            openai_dimensions=rag_settings()["OPENAI_DIMENSIONS"] or None,
        )
    except EmbedderSpecError as exc:
        raise ValidationError(str(exc), {"field": "embedder"}) from None
    # What a KB already uses stays usable; a new choice must be permitted.
    if info.spec != (defaults.embedder if defaults else None) and not embedder_permitted(
        info.spec, actor
    ):
        allowed = ", ".join(rag_settings()["EMBEDDERS_FOR_USERS"]) or "none"
        raise Forbidden(
            f"the embedder {info.spec!r} is for staff only here (yours to choose: {allowed})",
            {"field": "embedder"},
        )
    max_chunk = info.max_chunk_tokens
    size = chunk_size
    if size is None:
        size = defaults.chunk_size if defaults else rag_settings()["CHUNK_SIZE"]
        if max_chunk is not None:
            size = min(size, max_chunk)  # a default never exceeds what the model sees whole
    overlap = chunk_overlap
    if overlap is None:
        overlap = defaults.chunk_overlap if defaults else rag_settings()["CHUNK_OVERLAP"]
        overlap = min(overlap, size // 2)
    if size not in CHUNK_SIZE:
        raise ValidationError(CHUNK_SIZE.describe() + " tokens", {"field": "chunk_size"})
    if max_chunk is not None and size > max_chunk:
        raise ValidationError(
            f"chunk size must be at most {max_chunk} tokens for this embedder",
            {"field": "chunk_size"},
        )
    if overlap not in CHUNK_OVERLAP or overlap > size // 2:
        raise ValidationError(
            f"chunk overlap must be between 0 and half the chunk size ({size // 2})",
            {"field": "chunk_overlap"},
        )
    return BuildSettings(info.spec, info.dimensions, size, overlap)


def rebuild_settings_resolve(
    *,
    kb: Any,
    embedder: str | None,
    chunk_size: int | None,
    chunk_overlap: int | None,
    actor: Any = None,
) -> BuildSettings:
    """A rebuild's settings: the given ones, the rest from the knowledge base's own (what
    a rebuild builds and what its plan reports, alike)."""
    return build_settings_resolve(
        embedder=embedder,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        defaults=BuildSettings(
            kb.embedder, kb.embedding_dimensions, kb.chunk_size, kb.chunk_overlap
        ),
        actor=actor,
    )


def language_resolve(kb: Any, language: str | None) -> tuple[str, str]:
    """(setting, resolved language) of a build: the given setting or the KB's; "auto"
    resolves to the majority language of the KB's documents as detected so far."""
    setting = language or kb.language
    if setting not in languages.CHOICES:
        raise ValidationError(
            f"language must be one of {', '.join(languages.CHOICES)}", {"field": "language"}
        )
    if setting != languages.AUTO:
        return setting, setting
    detected = Document.objects.filter(knowledge_base=kb).values_list("language", flat=True)
    return setting, languages.majority(detected)
