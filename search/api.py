from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest
from ninja import File, Router, Status
from ninja.files import UploadedFile

from ingestion.services.documents import document_get
from knowledge_bases.generations import generation_searchable_get
from knowledge_bases.selectors import knowledge_base_get
from ragstudio.core.vocabulary import MetricName, SearchMode
from ragstudio.schemas import ERRORS
from search.evaluation import (
    QueryIn,
    evaluation_compare,
    evaluation_import,
    evaluation_queries_add,
    evaluation_run_request,
    evaluation_set_create,
    evaluation_set_delete,
    judgement_mark,
)
from search.schemas import (
    DocumentChunkOut,
    EvalAddOut,
    EvalCompareOut,
    EvalQueriesIn,
    EvalQueryIn,
    EvalRunDetailOut,
    EvalRunIn,
    EvalRunOut,
    EvalSetDetailOut,
    EvalSetIn,
    EvalSetOut,
    JudgementIn,
    SearchIn,
    SearchOut,
)
from search.selectors import (
    evaluation_set_get,
    evaluation_sets_of,
    latest_runs,
    run_get,
    runs_of,
)
from search.services import document_chunks, knowledge_base_search

router = Router(tags=["search"])
evaluation = Router(tags=["evaluation"])


@router.get(
    "/{slug}/documents/{int:document_id}/chunks",
    response={200: list[DocumentChunkOut], **ERRORS},
)
def list_document_chunks(request: HttpRequest, slug: str, document_id: int):  # type: ignore[no-untyped-def]
    """What was read from a document and how it was cut: the chunks the serving generation
    holds for it, in order, each with its place (section path, page, slide, sheet, rows,
    OCR). Empty while nothing serves it yet; at most 2,000 chunks."""
    kb = knowledge_base_get(slug=slug, user=request.user)
    return document_chunks(kb=kb, document=document_get(kb=kb, document_id=document_id))


@router.post("/{slug}/search", response={200: SearchOut, **ERRORS})
def search(request: HttpRequest, slug: str, payload: SearchIn):  # type: ignore[no-untyped-def]
    """Search a knowledge base: `vector` (cosine, ANN above the size threshold), `lexical`
    (BM25 with English stemming over passages, their chunks ranked by the passage's score)
    or `hybrid` (both at once, fused: z-score by default). 409 when the KB has no active
    generation yet or the generation asked for was collected."""
    kb = knowledge_base_get(slug=slug, user=request.user)
    return knowledge_base_search(kb=kb, params=payload.to_params())


def _queries(items: list[EvalQueryIn]) -> list[QueryIn]:
    return [
        QueryIn(text=q.query, relevant=list(q.relevant), grades=dict(q.grades), external_id=q.id)
        for q in items
    ]


@evaluation.get("/{slug}/evalsets", response={200: list[EvalSetOut], **ERRORS})
def list_sets(request: HttpRequest, slug: str):  # type: ignore[no-untyped-def]
    return evaluation_sets_of(knowledge_base_get(slug=slug, user=request.user))


@evaluation.post("/{slug}/evalsets", response={201: EvalSetDetailOut, **ERRORS})
def create_set(request: HttpRequest, slug: str, payload: EvalSetIn):  # type: ignore[no-untyped-def]
    """A new evaluation set, optionally with its queries and judgements (all or nothing:
    an unknown document or a bad grade is 422 naming the query, and nothing is stored)."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    with transaction.atomic():
        evaluation_set = evaluation_set_create(
            kb=kb, name=payload.name, description=payload.description, user=request.user
        )
        if payload.queries:
            evaluation_queries_add(
                evaluation_set=evaluation_set, queries=_queries(payload.queries), user=request.user
            )
    evaluation_set.refresh_from_db()
    return Status(201, evaluation_set)


@evaluation.get("/{slug}/evalsets/{name}", response={200: EvalSetDetailOut, **ERRORS})
def get_set(request: HttpRequest, slug: str, name: str):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user)
    return evaluation_set_get(kb=kb, name=name)


@evaluation.delete("/{slug}/evalsets/{name}", response={204: None, **ERRORS})
def delete_set(request: HttpRequest, slug: str, name: str):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    evaluation_set_delete(evaluation_set=evaluation_set_get(kb=kb, name=name))
    return Status(204, None)


@evaluation.post("/{slug}/evalsets/{name}/queries", response={200: EvalAddOut, **ERRORS})
def add_queries(request: HttpRequest, slug: str, name: str, payload: EvalQueriesIn):  # type: ignore[no-untyped-def]
    """Add queries (a query already in the set gets these judgements, replacing the grade
    of a document judged before)."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    evaluation_set = evaluation_set_get(kb=kb, name=name)
    result = evaluation_queries_add(
        evaluation_set=evaluation_set, queries=_queries(payload.queries), user=request.user
    )
    evaluation_set.refresh_from_db()
    return {"evaluation_set": evaluation_set, **result.__dict__}


@evaluation.post("/{slug}/evalsets/{name}/import", response={200: EvalAddOut, **ERRORS})
def import_set(request: HttpRequest, slug: str, name: str, file: File[UploadedFile]):  # type: ignore[no-untyped-def]
    """Import a JSON Lines file (multipart field `file`), one query a line:
    `{"query": "...", "relevant": [12, "paper.pdf", "corpus.jsonl#4983"], "grades":
    {"12": 2}, "id": "q1"}`. The set is created when new. All or nothing: 422 lists the
    bad lines."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    evaluation_set, result = evaluation_import(
        kb=kb, name=name, chunks=file.chunks(), user=request.user
    )
    return {"evaluation_set": evaluation_set, **result.__dict__}


@evaluation.post("/{slug}/evalsets/{name}/judgements", response={200: EvalAddOut, **ERRORS})
def mark(request: HttpRequest, slug: str, name: str, payload: JudgementIn):  # type: ignore[no-untyped-def]
    """Judge one result for a query (what the playground's buttons do): grade 0 for not
    relevant. The set and the query are created as needed."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    mark = judgement_mark(
        kb=kb,
        set_name=name,
        query=payload.query,
        document_id=payload.document_id,
        record_id=payload.record_id,
        chunk_id=payload.chunk_id,
        grade=payload.grade,
        user=request.user,
    )
    evaluation_set = evaluation_set_get(kb=kb, name=name)
    return {
        "evaluation_set": evaluation_set,
        "queries_added": int(mark.query_created),
        "queries_updated": int(not mark.query_created),
        "judgements": 1,
    }


@evaluation.post("/{slug}/evalsets/{name}/runs", response={202: EvalRunOut, **ERRORS})
def run_set(request: HttpRequest, slug: str, name: str, payload: EvalRunIn):  # type: ignore[no-untyped-def]
    """Queue an evaluation of a generation on the set (202): a worker measures nDCG@10,
    recall@10, recall@100 and MRR of the vector, lexical and hybrid modes, overall and per
    query, and stores them with the generation. Poll `GET .../runs/{id}` (`status`,
    `done` of `queries`). 409 when the set has no judged query, the generation's files are
    gone or the same evaluation is already under way; 429 past
    RAGSTUDIO_USER_EVALUATIONS runs of yours queued or running."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    evaluation_set = evaluation_set_get(kb=kb, name=name)
    number = None if payload.generation == "active" else int(payload.generation)
    generation = generation_searchable_get(kb, number)
    run = evaluation_run_request(
        evaluation_set=evaluation_set, generation=generation, user=request.user
    )
    return Status(202, run)


@evaluation.get("/{slug}/evalsets/{name}/runs", response={200: list[EvalRunOut], **ERRORS})
def list_runs(request: HttpRequest, slug: str, name: str):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user)
    evaluation_set = evaluation_set_get(kb=kb, name=name)
    return list(runs_of(evaluation_set))


@evaluation.get("/{slug}/evalsets/{name}/runs/{run_id}", response={200: EvalRunDetailOut, **ERRORS})
def get_run(request: HttpRequest, slug: str, name: str, run_id: int):  # type: ignore[no-untyped-def]
    """One run: while `queued` or `running`, `done` of `queries` measured; once
    `succeeded`, its metrics overall and per query; `failed`, with `error`."""
    kb = knowledge_base_get(slug=slug, user=request.user)
    evaluation_set = evaluation_set_get(kb=kb, name=name)
    return run_get(evaluation_set, run_id)


@evaluation.get("/{slug}/evalsets/{name}/compare", response={200: EvalCompareOut, **ERRORS})
def compare(  # type: ignore[no-untyped-def]
    request: HttpRequest,
    slug: str,
    name: str,
    a: int,
    b: int,
    mode: SearchMode = "hybrid",
    metric: MetricName = "ndcg@10",
):
    """Which queries got better and which got worse from generation `a` to `b` (their
    latest runs on the set), with both top-10 lists."""
    kb = knowledge_base_get(slug=slug, user=request.user)
    evaluation_set = evaluation_set_get(kb=kb, name=name)
    runs = latest_runs(kb=kb, evaluation_set=evaluation_set, numbers=(a, b))
    return evaluation_compare(run_a=runs[0], run_b=runs[1], mode=mode, metric=metric)
