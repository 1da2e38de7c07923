"""The engines a generation uses, opened from the Django side: its stores (where its files
live comes from the generation row and settings) and its embedder (configured from
settings). Everything above the engines opens them through here."""

from __future__ import annotations

import threading
from pathlib import Path

from ingestion.embedders import EmbedderConfig, get_embedder
from ingestion.embedders.query_cache import QueryEmbeddingCache
from ingestion.pipeline.types import Embedder, Vector
from knowledge_bases.models import Generation
from ragstudio.env import rag_settings
from search.stores.generation import GenerationStore, StoreLocation, reader_store


def generation_location(generation: Generation) -> StoreLocation:
    return StoreLocation(
        lancedb_uri=rag_settings()["LANCEDB_URI"],
        table_name=generation.table_name,
        bm25_path=Path(generation.bm25_path),
        dimensions=generation.dimensions,
    )


def generation_store(generation: Generation) -> GenerationStore:
    """A fresh handle on the LanceDB table and tantivy index of one generation."""
    return GenerationStore.open(generation_location(generation))


def generation_reader(generation: Generation) -> GenerationStore:
    """The process's long-lived handle for searching one generation."""
    return reader_store(generation_location(generation))


def embedder_get(spec: str) -> Embedder:
    """The loaded model for ``spec``, configured from settings, once per process."""
    return get_embedder(spec, EmbedderConfig.from_settings(rag_settings()))


_query_cache: QueryEmbeddingCache | None = None
_query_cache_lock = threading.Lock()


def query_cache() -> QueryEmbeddingCache:
    global _query_cache
    with _query_cache_lock:
        size = rag_settings()["QUERY_CACHE_SIZE"]
        if _query_cache is None or _query_cache.size != size:
            _query_cache = QueryEmbeddingCache(size)
        return _query_cache


def query_vector(generation: Generation, text: str) -> Vector:
    """The query's vector by the generation's model (cached per process)."""
    return query_cache().get(embedder_get(generation.embedder), text)
