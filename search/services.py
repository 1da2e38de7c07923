"""Searching one generation. Readers resolve the active generation per query from the
database, so a promote or rollback takes effect on the next query and a query in flight
finishes on the generation it started with (its files stay until GC, which keeps the
recently active ones)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knowledge_bases.models import Generation, KnowledgeBase
from ragstudio.env import rag_settings
from ragstudio.errors import Conflict
from search.stores.generation import GenerationStore


@dataclass(frozen=True)
class GenerationHits:
    generation: int
    vector_ids: list[str]
    lexical_ids: list[str]


def active_generation(kb_id: int) -> Generation:
    kb = KnowledgeBase.objects.select_related("active_generation").get(pk=kb_id)
    if kb.active_generation is None:
        raise Conflict(f"knowledge base {kb.slug!r} has no active generation yet")
    return kb.active_generation


def generation_store(generation: Generation) -> GenerationStore:
    """The LanceDB table and tantivy index of one generation."""
    return GenerationStore(
        lancedb_uri=rag_settings()["LANCEDB_URI"],
        table_name=generation.table_name,
        bm25_path=Path(generation.bm25_path),
        dimensions=generation.dimensions,
    )


def generation_search(
    generation: Generation, *, vector: list[float] | None, text: str, k: int = 10
) -> GenerationHits:
    store = generation_store(generation)
    vector_ids = [r["id"] for r in store.vectors.nearest(vector, k)] if vector is not None else []
    return GenerationHits(generation.number, vector_ids, store.bm25.search(text, k))
