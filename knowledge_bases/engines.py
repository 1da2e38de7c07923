"""The engines a generation uses, opened from the Django side: its stores (where its files
live comes from the generation row and settings) and its embedder (configured from
settings). Everything above the engines opens them through here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from django.db import connection

from ingestion.embedders import EmbedderConfig, get_embedder
from ingestion.embedders.query_cache import QueryEmbeddingCache
from ingestion.pipeline.types import Embedder, Vector
from knowledge_bases.models import Generation
from ragstudio.env import rag_settings
from search.stores.generation import GenerationStore, StoreLocation, reader_store
from search.stores.objects import ObjectStore, storage_options_items


def bm25_local_path(kb_id: int, number: int) -> Path:
    """Where this host keeps a generation's tantivy index (derived, not the path stored on
    the row: every host has a data directory of its own)."""
    return Path(rag_settings()["BM25_DIR"]) / f"kb{kb_id}" / f"g{number}"


def bm25_remote_uri(kb_id: int, number: int | None = None) -> str:
    """Where the object store keeps a generation's tantivy index (or all of a KB's), ""
    without one."""
    root = rag_settings()["STORAGE_URI"]
    if not root:
        return ""
    return f"{root}/bm25/kb{kb_id}" + (f"/g{number}" if number is not None else "")


def upload_remote_uri(storage_path: str) -> str:
    """Where the object store keeps an uploaded file (or a KB's uploads), "" without one."""
    root = rag_settings()["STORAGE_URI"]
    return f"{root}/uploads/{storage_path}" if root else ""


def _upload_store() -> ObjectStore | None:
    root = rag_settings()["STORAGE_URI"]
    return ObjectStore(f"{root}/uploads", storage_options()) if root else None


def document_file_share(storage_path: str, local: Path) -> None:
    """Put an uploaded file where every host can read it (nothing on one machine)."""
    store = _upload_store()
    if store is not None:
        store.put_file(storage_path, local)


def document_read(storage_path: str) -> bytes:
    """An uploaded file's bytes: from this host's copy, else from the object store (kept
    here as a cache). FileNotFoundError when neither has it."""
    local = Path(rag_settings()["UPLOAD_DIR"]) / storage_path
    if local.exists():
        return local.read_bytes()
    store = _upload_store()
    if store is not None and store.get_file(storage_path, local):
        return local.read_bytes()
    raise FileNotFoundError(f"uploaded file {storage_path} is missing")


def document_file_forget(storage_path: str) -> None:
    """Remove an uploaded file here and from the object store."""
    (Path(rag_settings()["UPLOAD_DIR"]) / storage_path).unlink(missing_ok=True)
    store = _upload_store()
    if store is not None:
        store.delete(storage_path)


def storage_options() -> tuple[tuple[str, str], ...]:
    return storage_options_items(rag_settings()["STORAGE_OPTIONS"])


def generation_location(generation: Generation) -> StoreLocation:
    return StoreLocation(
        lancedb_uri=rag_settings()["LANCEDB_URI"],
        table_name=generation.table_name,
        bm25_path=bm25_local_path(generation.knowledge_base_id, generation.number),
        dimensions=generation.dimensions,
        storage_options=storage_options(),
        bm25_remote=bm25_remote_uri(generation.knowledge_base_id, generation.number),
    )


def _record_bm25_version(generation_id: int) -> Callable[[int], None]:
    def record(version: int) -> None:
        # Raised only: a slower writer's older version never overwrites a newer one.
        Generation.objects.filter(pk=generation_id, bm25_version__lt=version).update(
            bm25_version=version
        )
        if threading.current_thread() is not threading.main_thread():
            connection.close()  # the sink's writer thread: no connection left behind

    return record


def generation_store(generation: Generation) -> GenerationStore:
    """A fresh handle on the LanceDB table and tantivy index of one generation, up to date
    with the object store; what it publishes is recorded on the generation's row."""
    store = GenerationStore.open(generation_location(generation))
    if store.bm25.replica is not None:
        store.bm25.replica.on_publish = _record_bm25_version(generation.pk)
        store.bm25.sync_before_use()
    return store


def generation_reader(generation: Generation) -> GenerationStore:
    """The process's long-lived handle for searching one generation, holding at least the
    BM25 version the generation's row says was published (rows are read per query)."""
    store = reader_store(generation_location(generation))
    store.bm25.sync(generation.bm25_version)
    return store


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
