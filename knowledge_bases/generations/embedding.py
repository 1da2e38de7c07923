"""A generation's model, loaded once per process and configured from settings, and the
per-process cache of query vectors."""

from __future__ import annotations

import threading
from dataclasses import replace

from ingestion.embedders import EmbedderConfig, get_embedder
from ingestion.embedders.query_cache import QueryEmbeddingCache
from knowledge_bases.models import Generation
from ragstudio.core.types import Embedder, Vector
from ragstudio.env import rag_settings


def embedder_get(spec: str) -> Embedder:
    """The loaded model for ``spec``, configured from settings, once per process."""
    return get_embedder(spec, EmbedderConfig.from_settings(rag_settings()))


def query_embedder_get(spec: str) -> Embedder:
    """The model for ``spec`` as searches use it: with ``QUERY_EMBED_THREADS`` threads (the
    same loaded model as ``embedder_get``'s when the two settings agree)."""
    cfg = rag_settings()
    config = EmbedderConfig.from_settings(cfg)
    return get_embedder(spec, replace(config, threads=cfg["QUERY_EMBED_THREADS"] or None))


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
    return query_cache().get(query_embedder_get(generation.embedder), text)
