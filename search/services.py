"""Searching one generation. Readers resolve the active generation per query from the
database, so a promote or rollback takes effect on the next query and a query in flight
finishes on the generation it started with (its files stay until GC, which keeps the
recently active ones)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestion.pipeline.types import Embedder, Vector
from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.env import rag_settings
from ragstudio.errors import Conflict, NotFound
from search.filters import SearchFilter
from search.fusion import Fused, FusionParams, fuse, single
from search.stores.generation import GenerationStore
from search.stores.lancedb_store import metadata_of


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


_READERS: OrderedDict[tuple[str, str, str], GenerationStore] = OrderedDict()
_READERS_LOCK = threading.Lock()
READER_CACHE_SIZE = 32


def reader_store(generation: Generation) -> GenerationStore:
    """A long-lived store for searching one generation. Opening a table per request costs
    its index loads (measured: vector search 85 ms on a fresh handle at 100k rows, 7 ms on
    a reused one); handles see later writes (read consistency interval 0). Searches never
    reach a collected generation, so a handle is never used after its files are gone."""
    key = (rag_settings()["LANCEDB_URI"], generation.table_name, generation.bm25_path)
    with _READERS_LOCK:
        store = _READERS.get(key)
        if store is not None:
            _READERS.move_to_end(key)
            return store
    store = generation_store(generation)
    with _READERS_LOCK:
        store = _READERS.setdefault(key, store)
        while len(_READERS) > READER_CACHE_SIZE:
            _READERS.popitem(last=False)
    return store


def generation_search(
    generation: Generation, *, vector: list[float] | None, text: str, k: int = 10
) -> GenerationHits:
    store = generation_store(generation)
    vector_ids = []
    if vector is not None:
        vector_ids = [chunk_id for chunk_id, _ in store.vectors.vector_search(vector, k)]
    return GenerationHits(generation.number, vector_ids, store.bm25.search(text, k))


# --- the search service -------------------------------------------------------------

# Hybrid asks each engine for a deeper pool than the page, so fusion has something to
# reorder: at least this many, or twice the depth of the page.
HYBRID_MIN_POOL = 50
MAX_POOL = 1000
SNIPPET_CHARS = 240


@dataclass(frozen=True)
class SearchParams:
    query: str
    mode: str = "hybrid"
    limit: int = 10
    offset: int = 0
    generation: int | None = None  # None: the active one
    filter: SearchFilter = field(default_factory=SearchFilter)
    fusion: FusionParams = field(default_factory=FusionParams)
    explain: bool = False


@dataclass(frozen=True)
class Citation:
    document_id: int
    title: str
    filename: str
    chunk: int  # 1-based position of the chunk in its document
    chunks: int  # how many chunks the document has (0: unknown)
    page: int | None


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    document_id: int
    score: float
    content: str
    snippet: str
    metadata: dict[str, Any]
    citation: Citation
    explain: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchOutcome:
    knowledge_base: str
    generation: int
    mode: str
    fusion: str | None
    results: list[SearchHit]
    took_ms: float
    timings: dict[str, float]
    exact_vector_search: bool | None  # None: no vector search ran (lexical, or no hits)


# Generations that have their files: everything but failed and collected ones.
SEARCHABLE_STATUSES = (
    Generation.Status.ACTIVE,
    Generation.Status.READY,
    Generation.Status.ARCHIVED,
    Generation.Status.BUILDING,
)


def search_generation_get(kb: KnowledgeBase, number: int | None) -> Generation:
    """The generation a search reads: the active one, or a numbered one that still has
    its files (building, ready, active or archived)."""
    if number is None:
        return active_generation(kb.pk)
    generation = Generation.objects.filter(knowledge_base=kb, number=number).first()
    if generation is None:
        raise NotFound(f"knowledge base {kb.slug!r} has no generation {number}")
    if generation.status not in SEARCHABLE_STATUSES:
        raise Conflict(
            f"generation {number} is {generation.status}: it cannot be searched",
            {"generation": number, "status": generation.status},
        )
    return generation


class QueryEmbeddingCache:
    """Query vectors by (model fingerprint, text), least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, embedder: Embedder, text: str) -> Vector:
        key = (embedder.fingerprint, text)
        with self._lock:
            vector = self._items.get(key)
            if vector is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return vector
            self.misses += 1
        vector = embedder.embed_batch([text])[0]
        if self.size > 0:
            with self._lock:
                self._items[key] = vector
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return vector

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0


_query_cache: QueryEmbeddingCache | None = None
_query_cache_lock = threading.Lock()
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="search")


def query_cache() -> QueryEmbeddingCache:
    global _query_cache
    with _query_cache_lock:
        size = rag_settings()["QUERY_CACHE_SIZE"]
        if _query_cache is None or _query_cache.size != size:
            _query_cache = QueryEmbeddingCache(size)
        return _query_cache


def query_embedder(generation: Generation) -> Embedder:
    from ingestion.jobs import get_embedder

    return get_embedder(generation.embedder)


def _vector_ranking(
    generation: Generation, store: GenerationStore, params: SearchParams, k: int, timings: dict
) -> tuple[list[tuple[str, float]], bool]:
    cfg = rag_settings()
    started = time.perf_counter()
    vector = query_cache().get(query_embedder(generation), params.query)
    timings["embed_ms"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    where = params.filter.lance_where()
    # A selective filter leaves few rows: search them exactly rather than ask the ANN
    # index for neighbours most of which the filter then throws away.
    exact = where is not None and store.vectors.count_where(where) <= cfg["ANN_MIN_ROWS"]
    ranked = store.vectors.vector_search(
        vector,
        k,
        where=where,
        exact=exact,
        nprobes=cfg["ANN_NPROBES"],
        refine_factor=cfg["ANN_REFINE_FACTOR"],
    )
    timings["vector_ms"] = (time.perf_counter() - started) * 1000
    return ranked, exact or not store.vectors.has_vector_index()


def _lexical_ranking(
    store: GenerationStore, params: SearchParams, k: int, timings: dict
) -> list[tuple[str, float]]:
    started = time.perf_counter()
    ranked = store.bm25.search_scored(params.query, k, where=params.filter)
    timings["bm25_ms"] = (time.perf_counter() - started) * 1000
    return ranked


def knowledge_base_search(*, kb: KnowledgeBase, params: SearchParams) -> SearchOutcome:
    """Search one generation of a KB: vector, lexical (BM25) or hybrid (both engines at
    once, fused), one page of results with snippets and citations."""
    started = time.perf_counter()
    generation = search_generation_get(kb, params.generation)
    store = reader_store(generation)
    if params.filter.metadata and not (
        store.vectors.supports_metadata_filters() and store.bm25.supports_metadata_filters()
    ):
        raise Conflict(
            f"generation {generation.number} was built before metadata filters existed: "
            "rebuild it to filter on metadata (document filters work)",
            {"generation": generation.number},
        )
    depth = params.offset + params.limit
    timings: dict[str, float] = {}
    exact: bool | None = None
    if params.filter.impossible():
        fused: list[Fused] = []
    elif params.mode == "vector":
        ranked, exact = _vector_ranking(generation, store, params, depth, timings)
        fused = single(ranked, engine="vector")
    elif params.mode == "lexical":
        fused = single(_lexical_ranking(store, params, depth, timings), engine="bm25")
    else:
        pool = min(max(HYBRID_MIN_POOL, 2 * depth), MAX_POOL)
        vector_future = _executor.submit(_vector_ranking, generation, store, params, pool, timings)
        lexical = _lexical_ranking(store, params, pool, timings)
        ranked, exact = vector_future.result()
        fused = fuse(ranked, lexical, params.fusion)
    page = fused[params.offset : depth]
    fetch_started = time.perf_counter()
    hits = _hits(kb, generation, store, params, page)
    timings["fetch_ms"] = (time.perf_counter() - fetch_started) * 1000
    return SearchOutcome(
        knowledge_base=kb.slug,
        generation=generation.number,
        mode=params.mode,
        fusion=params.fusion.method if params.mode == "hybrid" else None,
        results=hits,
        took_ms=(time.perf_counter() - started) * 1000,
        timings={k: round(v, 3) for k, v in timings.items()},
        exact_vector_search=exact,
    )


ROW_COLUMNS = ["document_id", "ordinal", "text", "title", "page", "metadata"]


def _hits(
    kb: KnowledgeBase,
    generation: Generation,
    store: GenerationStore,
    params: SearchParams,
    page: list[Fused],
) -> list[SearchHit]:
    if not page:
        return []
    ids = [h.chunk_id for h in page]
    rows = store.bm25.rows(ids)
    missing = [i for i in ids if i not in rows]
    if missing:  # an index from an older release, or a row tantivy has not got yet
        rows.update(store.vectors.fetch(missing, ROW_COLUMNS))
    doc_ids = {int(r["document_id"]) for r in rows.values()}
    active = kb.active_generation_id == generation.pk
    documents = {
        d.pk: d
        for d in Document.objects.filter(knowledge_base=kb, pk__in=doc_ids).only(
            "pk", "title", "original_filename", "chunk_count"
        )
    }
    snippets = store.bm25.snippets(
        params.query, {i: r["text"] for i, r in rows.items()}, SNIPPET_CHARS
    )
    hits = []
    for rank, fused in enumerate(page, start=params.offset + 1):
        row = rows.get(fused.chunk_id)
        if row is None:  # written to one store only (a crash mid-flush): skip it
            continue
        document = documents.get(int(row["document_id"]))
        citation = Citation(
            document_id=int(row["document_id"]),
            title=(row.get("title") or (document.title if document else "")),
            filename=document.original_filename if document else "",
            chunk=int(row["ordinal"]) + 1,
            # Document rows count the active generation's chunks only.
            chunks=document.chunk_count if document and active else 0,
            page=row.get("page"),
        )
        explain = None
        if params.explain:
            explain = {
                "rank": rank,
                "vector_score": fused.vector_score,
                "vector_rank": fused.vector_rank,
                "bm25_score": fused.bm25_score,
                "bm25_rank": fused.bm25_rank,
            }
        hits.append(
            SearchHit(
                chunk_id=fused.chunk_id,
                document_id=int(row["document_id"]),
                score=fused.score,
                content=row["text"],
                snippet=snippets.get(fused.chunk_id, ""),
                metadata=metadata_of(row),
                citation=citation,
                explain=explain,
            )
        )
    return hits


def search_params(payload: Any) -> SearchParams:
    """SearchParams from a validated SearchIn (API) or an equivalent object."""
    fusion = payload.fusion
    if isinstance(fusion, str):
        fusion_params = FusionParams(method=fusion)
    else:
        fusion_params = FusionParams(
            method=fusion.method,
            k=fusion.k,
            vector_weight=fusion.vector_weight,
            bm25_weight=fusion.bm25_weight,
        )
    filters = payload.filters
    search_filter = SearchFilter()
    if filters is not None:
        metadata = {
            key: (value.values if hasattr(value, "values") else value)
            for key, value in filters.metadata.items()
        }
        search_filter = SearchFilter.build(document_ids=filters.document_ids, metadata=metadata)
    return SearchParams(
        query=payload.query,
        mode=payload.mode,
        limit=payload.limit,
        offset=payload.offset,
        generation=None if payload.generation == "active" else int(payload.generation),
        filter=search_filter,
        fusion=fusion_params,
        explain=payload.explain,
    )
