"""The search service: one generation of a knowledge base searched by vector, BM25 or
both (fused), one page of results with snippets and citations. Readers resolve the active
generation per query from the database, so a promote or rollback takes effect on the next
query and a query in flight finishes on the generation it started with (its files stay
until GC, which keeps the recently active ones)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from knowledge_bases.generations import (
    generation_reader,
    generation_searchable_get,
    query_vector,
    version_masks,
    versions_of_deleted_documents,
)
from knowledge_bases.models import Document, Generation, KnowledgeBase, VectorStoreFile
from knowledge_bases.selectors import documents_matching
from ragstudio.core import metrics
from ragstudio.core.errors import Conflict, ValidationError
from ragstudio.env import rag_settings
from search.ranking.fusion import Fused, fuse_page, passages_first, single
from search.ranking.predicates import Predicate
from search.ranking.results import Citation, SearchHit, SearchOutcome, SearchParams
from search.ranking.snippets import snippet_html
from search.stores.generation import GenerationStore
from search.stores.lancedb_store import metadata_of

# Hybrid asks each engine for a deeper pool than the page, so fusion has something to
# reorder, sized by what z-score fusion needs: its statistics are taken over each engine's
# top 100 passages (search.ranking.fusion.Z_DEPTH). BM25 ranks passages, so it is asked for
# that many; the vector engine ranks chunks, HYBRID_VECTOR_POOL of them. The pools are the
# same for every depth up to HYBRID_FIXED_DEPTH, so a page of 10 shows exactly the first 10
# hits an evaluation (300 deep) scores; with pools that grew with the depth, 41 of
# SciFact's first 200 claims had a first page other than the one evaluated.
HYBRID_FIXED_DEPTH = 300
HYBRID_VECTOR_POOL = 300
HYBRID_PASSAGES = 100
# The vector pool keeps the ANN index's quantized distances (0: not re-ranked exactly):
# fusion standardises them over the pool, where the error is far below the spread.
HYBRID_REFINE_PAGE = 0
MAX_POOL = 1000
SNIPPET_CHARS = 240

_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="search")


def vector_ranking(
    generation: Generation,
    store: GenerationStore,
    params: SearchParams,
    k: int,
    timings: dict,
    units: dict[str, str] | None = None,
    refine_page: int | None = None,
) -> tuple[list[tuple[str, float]], bool]:
    """(chunk id, cosine similarity) of the ``k`` nearest chunks, and whether they were
    compared exactly. The ANN refine factor is sized for ``refine_page`` results (default:
    the request's page; 0: none, the index's distances)."""
    cfg = rag_settings()
    started = time.perf_counter()
    vector = query_vector(generation, params.query)
    timings["embed_ms"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    where = params.filter.lance_where(with_versions=store.vectors.supports_versions())
    # A selective filter leaves few rows: search them exactly rather than ask the ANN
    # index for neighbours most of which the filter then throws away.
    exact = where is not None and store.vectors.count_where(where) <= cfg["ANN_MIN_ROWS"]
    # The refine factor is tuned for a page (re-rank factor x page candidates exactly); a
    # deeper pool (hybrid's) already holds that many candidates, so it needs less of it.
    page = max(1, params.offset + params.limit) if refine_page is None else refine_page
    refine = max(1, math.ceil(cfg["ANN_REFINE_FACTOR"] * min(page, k) / k)) if page else None
    ranked = store.vectors.vector_search(
        vector,
        k,
        where=where,
        exact=exact,
        nprobes=cfg["ANN_NPROBES"],
        ef=cfg["ANN_EF"],
        refine_factor=refine,
        units=units,
    )
    timings["vector_ms"] = (time.perf_counter() - started) * 1000
    return ranked, exact or not store.vectors.has_vector_index()


def lexical_ranking(
    store: GenerationStore,
    params: SearchParams,
    k: int,
    timings: dict,
    units: dict[str, str] | None = None,
    order_within: int = 0,
) -> list[tuple[str, float]]:
    """BM25: the chunks of the best ``k`` passages with their passage's score (in the
    first ``order_within`` passages, their own score orders them); each chunk's passage
    goes into ``units``. A generation built before passages existed ranks ``k`` chunks
    alone."""
    started = time.perf_counter()
    passages = store.bm25.passage_ranking(
        params.query, k, where=params.filter, order_within=order_within
    )
    if passages:
        ranked = [(chunk, score) for chunk, score, _ in passages]
        if units is not None:
            units.update((chunk, passage) for chunk, _, passage in passages)
    else:
        ranked = store.bm25.search_scored(params.query, k, where=params.filter)
    timings["bm25_ms"] = (time.perf_counter() - started) * 1000
    return ranked


MASK_ATTEMPTS = 3


def hybrid_pools(depth: int) -> tuple[int, int]:
    """How many chunks the vector engine and how many passages BM25 are asked for, for
    ``depth`` fused hits."""
    if depth <= HYBRID_FIXED_DEPTH:
        return HYBRID_VECTOR_POOL, HYBRID_PASSAGES
    return min(depth, MAX_POOL), min(depth, MAX_POOL)


def ranked_hits(
    generation: Generation,
    store: GenerationStore,
    params: SearchParams,
    depth: int,
    timings: dict,
) -> tuple[list[Fused], bool | None]:
    """The first ``depth`` hits of a search, leaving out the document versions masked in
    the generation (being written, or replaced). The masks are read again after the
    engines answered: if a version was masked or unmasked meanwhile, the engines may have
    seen rows the first reading did not account for, so the search runs again."""
    masked = version_masks(generation)
    for _attempt in range(MASK_ATTEMPTS):
        hidden = replace(params, filter=params.filter.hiding(masked)) if masked else params
        ranked = _ranked_hits(generation, store, hidden, depth, timings)
        now = version_masks(generation)
        if now == masked:
            break
        masked = now
    return ranked


def _ranked_hits(
    generation: Generation,
    store: GenerationStore,
    params: SearchParams,
    depth: int,
    timings: dict,
) -> tuple[list[Fused], bool | None]:
    """The first ``depth`` hits of a search in its mode (hybrid: both engines at once,
    fused; lexical and hybrid show each passage's best chunk before any passage's second),
    and whether vectors were compared exactly: what a search request pages through, and
    what an evaluation measures."""
    exact: bool | None = None
    if params.filter.impossible():
        return [], None
    if params.mode == "vector":
        ranked, exact = vector_ranking(generation, store, params, depth, timings)
        return single(ranked, engine="vector"), exact
    units: dict[str, str] = {}
    if params.mode == "lexical":
        ranked = lexical_ranking(store, params, depth, timings, units, order_within=depth)
        hits = single(ranked, engine="bm25")
        return passages_first(hits, units)[:depth], None
    vector_pool, passages = hybrid_pools(depth)
    vector_units: dict[str, str] = {}
    vector_future = _executor.submit(
        vector_ranking,
        generation,
        store,
        params,
        vector_pool,
        timings,
        vector_units,
        HYBRID_REFINE_PAGE,
    )
    lexical = lexical_ranking(store, params, passages, timings, units)
    ranked, exact = vector_future.result()
    started = time.perf_counter()
    units.update(vector_units)
    # A table from before passages were recorded: ask tantivy for them.
    units.update(store.bm25.parents([c for c, _ in ranked if c not in units]))
    page = fuse_page(ranked, lexical, params.fusion, units, depth)
    timings["fuse_ms"] = (time.perf_counter() - started) * 1000
    return page, exact


def knowledge_base_search(*, kb: KnowledgeBase, params: SearchParams) -> SearchOutcome:
    """Search one generation of a KB: vector, lexical (BM25) or hybrid (both engines at
    once, fused), one page of results with snippets and citations."""
    started = time.perf_counter()
    generation = generation_searchable_get(kb, params.generation)
    store = generation_reader(generation)
    if params.filter.metadata and not (
        store.vectors.supports_metadata_filters() and store.bm25.supports_metadata_filters()
    ):
        raise Conflict(
            f"generation {generation.number} was built before metadata filters existed: "
            "rebuild it to filter on metadata (document filters work)",
            {"generation": generation.number},
        )
    if params.documents:
        params = replace(
            params, filter=params.filter.within_documents(_documents_matching(kb, params))
        )
    if generation.pk != kb.active_generation_id:
        # An older generation still holds documents deleted since: not what to answer with.
        gone = versions_of_deleted_documents(generation, store)
        if gone:
            params = replace(params, filter=params.filter.hiding(gone))
    depth = params.offset + params.limit
    timings: dict[str, float] = {}
    candidates = depth
    if params.predicate is not None:
        candidates = min(max(depth * PREDICATE_OVERFETCH, 100), PREDICATE_MAX_CANDIDATES)
    fused, exact = ranked_hits(generation, store, params, candidates, timings)
    if params.min_score is not None:
        fused = [hit for hit in fused if hit.score >= params.min_score]
    if params.predicate is not None:
        fused = _satisfying(kb, store, fused, params.predicate)
    page = fused[params.offset : depth]
    fetch_started = time.perf_counter()
    hits = _hits(kb, generation, store, params, page)
    timings["fetch_ms"] = (time.perf_counter() - fetch_started) * 1000
    took = time.perf_counter() - started
    metrics.SEARCHES.labels(params.mode).inc()
    metrics.SEARCH_SECONDS.labels(params.mode).observe(took)
    return SearchOutcome(
        knowledge_base=kb.slug,
        generation=generation.number,
        mode=params.mode,
        fusion=params.fusion.method if params.mode == "hybrid" else None,
        results=hits,
        took_ms=took * 1000,
        timings={k: round(v, 3) for k, v in timings.items()},
        exact_vector_search=exact,
    )


# Documents a name or date filter may stand for: past this the filter is too broad to
# send to the engines as a list of ids (narrow it, or leave it out).
MAX_MATCHED_DOCUMENTS = 10_000


def _documents_matching(kb: KnowledgeBase, params: SearchParams) -> list[int]:
    query = params.documents
    matching = documents_matching(
        kb,
        name=query.name,
        uploaded_after=query.uploaded_after,
        uploaded_before=query.uploaded_before,
    )
    ids = list(matching.values_list("pk", flat=True)[: MAX_MATCHED_DOCUMENTS + 1])
    if len(ids) > MAX_MATCHED_DOCUMENTS:
        raise ValidationError(
            f"the document filters match more than {MAX_MATCHED_DOCUMENTS:,} documents: "
            "narrow them",
            {"field": "filters"},
        )
    return ids


# Conditions the engines cannot check are checked on this many candidates per result
# asked for (at least 100, at most 1,000): a rare match further down is not found.
PREDICATE_OVERFETCH = 10
PREDICATE_MAX_CANDIDATES = 1000


def _satisfying(
    kb: KnowledgeBase, store: GenerationStore, fused: list[Fused], predicate: Predicate
) -> list[Fused]:
    """The hits whose metadata meets ``predicate``: the chunk's own, over the attributes
    its document was given as a vector-store file (the OpenAI-compatible API)."""
    ids = [hit.chunk_id for hit in fused]
    rows = store.bm25.rows(ids)
    missing = [i for i in ids if i not in rows]
    if missing:
        rows.update(store.vectors.fetch(missing, ROW_COLUMNS))
    documents = {int(row["document_id"]) for row in rows.values()}
    attributes = dict(
        VectorStoreFile.objects.filter(knowledge_base=kb, document_id__in=documents).values_list(
            "document_id", "attributes"
        )
    )
    kept = []
    for hit in fused:
        row = rows.get(hit.chunk_id)
        if row is None:
            continue
        own = attributes.get(int(row["document_id"])) or {}
        metadata = {**own, **metadata_of(row)}
        if predicate.matches(metadata):
            kept.append(hit)
    return kept


def location_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """A chunk's place in its document, from the keys its parser set in its metadata."""

    def text(key: str) -> str | None:
        value = metadata.get(key)
        return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None

    slide = metadata.get("slide")
    return {
        "section": text("section"),
        "slide": slide if isinstance(slide, int) and not isinstance(slide, bool) else None,
        "sheet": text("sheet"),
        "rows": text("rows"),
        "ocr": metadata.get("ocr") is True,
    }


ROW_COLUMNS = ["document_id", "ordinal", "text", "title", "page", "metadata", "record_id"]


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
    highlights = store.bm25.highlights(
        params.query, {i: r["text"] for i, r in rows.items()}, SNIPPET_CHARS
    )
    hits = []
    for rank, fused in enumerate(page, start=params.offset + 1):
        row = rows.get(fused.chunk_id)
        if row is None:  # written to one store only (a crash mid-flush): skip it
            continue
        document = documents.get(int(row["document_id"]))
        meta = metadata_of(row)
        citation = Citation(
            document_id=int(row["document_id"]),
            title=(row.get("title") or (document.title if document else "")),
            filename=document.original_filename if document else "",
            chunk=int(row["ordinal"]) + 1,
            # Document rows count the active generation's chunks only.
            chunks=document.chunk_count if document and active else 0,
            page=row.get("page"),
            record_id=row.get("record_id"),
            document_title=document.title if document else "",
            **location_of(meta),
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
                snippet=snippet_html(row["text"], highlights.get(fused.chunk_id), SNIPPET_CHARS),
                metadata=meta,
                citation=citation,
                explain=explain,
            )
        )
    return hits


# A document page lists at most this many chunks (a bigger document is cut, and says so).
MAX_DOCUMENT_CHUNKS = 2000
CHUNK_COLUMNS = ["id", "ordinal", "text", "title", "page", "metadata", "record_id", "token_count"]


@dataclass(frozen=True)
class DocumentChunk:
    id: str
    number: int  # its position in the document, from 1
    text: str
    tokens: int
    page: int | None
    record_id: str | None
    metadata: dict[str, Any]
    section: str | None
    slide: int | None
    sheet: str | None
    rows: str | None
    ocr: bool


def document_chunks(
    *, kb: KnowledgeBase, document: Document, limit: int = MAX_DOCUMENT_CHUNKS
) -> list[DocumentChunk]:
    """The chunks the serving generation holds for a document, in order: what was read
    from the file and how it was cut (empty when nothing serves yet)."""
    if kb.active_generation_id is None:
        return []
    generation = generation_searchable_get(kb, None)
    store = generation_reader(generation)
    rows = store.vectors.document_rows(document.pk, CHUNK_COLUMNS, limit=limit)
    chunks = []
    for row in rows:
        meta = metadata_of(row)
        chunks.append(
            DocumentChunk(
                id=row["id"],
                number=int(row["ordinal"]) + 1,
                text=row["text"],
                tokens=int(row.get("token_count") or 0),
                page=row.get("page"),
                record_id=row.get("record_id"),
                metadata=meta,
                **location_of(meta),
            )
        )
    return chunks
