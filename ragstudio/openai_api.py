"""The OpenAI-compatible vector-stores API at /v1/, for the `openai` SDKs and what is built
on them: files, vector stores (knowledge bases), their files and file batches, and search
(hybrid by default; `search_mode` picks vector or keyword). Objects, list envelopes,
statuses and errors (`{"error": {message, type, param, code}}`) as OpenAI returns them.
Authentication: the same bearer API keys as the rest of the API."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import File, Form, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.files import UploadedFile

from ingestion.services.vector_stores import (
    api_file_bytes,
    api_file_create,
    api_file_delete,
    api_file_get,
    api_files_of,
    batch_cancel,
    batch_create,
    batch_get,
    batch_status,
    file_counts,
    store_file_error,
    store_file_get,
    store_file_remove,
    store_file_status,
    store_file_update,
    store_files_add,
    store_files_of,
    store_id,
    store_usage,
    vector_store_create,
    vector_store_delete,
    vector_store_get,
    vector_store_update,
    vector_stores_of,
)
from knowledge_bases.models import ApiFile, KnowledgeBase, VectorStoreFile, VectorStoreFileBatch
from ragstudio.auth import ApiTokenAuth
from ragstudio.core.errors import Conflict, Forbidden, NotFound, RagStudioError
from search.ranking.filters import SearchFilter
from search.ranking.fusion import unit_score
from search.ranking.predicates import Predicate, PredicateError, comparison, compound
from search.ranking.results import SearchParams
from search.services import document_chunks, knowledge_base_search


class ErrorBody(Schema):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorOut(Schema):
    error: ErrorBody


ERRORS: dict[int, Any] = {status: ErrorOut for status in (400, 401, 403, 404, 409, 413)}

openai = NinjaAPI(
    title="RAG Studio: OpenAI-compatible vector stores",
    version="1",
    description="`client = OpenAI(base_url='https://host/v1', api_key='rs_...')`",
    auth=[ApiTokenAuth()],
    urls_namespace="openai",
)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
}


def _error(
    request: HttpRequest, status: int, message: str, *, param: Any = None, code: Any = None
) -> HttpResponse:
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "api_error"),
            "param": param,
            "code": code,
        }
    }
    return openai.create_response(request, body, status=status)


@openai.exception_handler(RagStudioError)
def _domain_error(request: HttpRequest, exc: RagStudioError) -> HttpResponse:
    status = {NotFound: 404, Forbidden: 403, Conflict: 409}.get(type(exc), 400)
    code = "not_found" if status == 404 else None
    return _error(
        request,
        status,
        exc.message,
        param=exc.extra.get("param") or exc.extra.get("field"),
        code=code,
    )


@openai.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(request, 401, "Incorrect API key provided.", code="invalid_api_key")


@openai.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, exc.status_code, str(exc))


@openai.exception_handler(NinjaValidationError)
def _validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    param = ".".join(str(p) for p in first.get("loc", [])[1:]) or None
    return _error(request, 400, str(first.get("msg", "invalid request")), param=param)


def _body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        raise HttpError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def _seconds(moment: Any) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def _page(request: HttpRequest, items: list[Any], ident: Any, render: Any) -> dict[str, Any]:
    """OpenAI's cursor list: limit (1-100, 20), order (desc), after / before an id."""
    try:
        limit = int(request.GET.get("limit", 20))
    except ValueError:
        raise HttpError(400, "limit must be an integer") from None
    if not 1 <= limit <= 100:
        raise HttpError(400, "limit must be between 1 and 100")
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise HttpError(400, "order must be asc or desc")
    if order == "asc":
        items = list(reversed(items))
    ids = [ident(item) for item in items]
    after, before = request.GET.get("after"), request.GET.get("before")
    if after:
        items = items[ids.index(after) + 1 :] if after in ids else []
    elif before:
        items = items[: ids.index(before)] if before in ids else []
    page = items[:limit]
    data = [render(item) for item in page]
    return {
        "object": "list",
        "data": data,
        "first_id": ident(page[0]) if page else None,
        "last_id": ident(page[-1]) if page else None,
        "has_more": len(items) > limit,
    }


# --- files ------------------------------------------------------------------------------


def _file(file: ApiFile) -> dict[str, Any]:
    return {
        "id": file.public_id,
        "object": "file",
        "bytes": file.size,
        "created_at": _seconds(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


@openai.post("/files", response={200: dict, **ERRORS}, tags=["files"])
def create_file(  # type: ignore[no-untyped-def]
    request: HttpRequest, file: File[UploadedFile], purpose: Form[str] = "assistants"
):
    """Upload a file (multipart: `file`, `purpose`) to add to vector stores later."""
    created = api_file_create(
        user=request.user, name=file.name or "upload", chunks=file.chunks(), purpose=purpose
    )
    return _file(created)


@openai.get("/files", response={200: dict, **ERRORS}, tags=["files"])
def list_files(request: HttpRequest):  # type: ignore[no-untyped-def]
    files = list(api_files_of(request.user))
    purpose = request.GET.get("purpose")
    if purpose:
        files = [f for f in files if f.purpose == purpose]
    return _page(request, files, lambda f: f.public_id, _file)


@openai.get("/files/{file_id}", response={200: dict, **ERRORS}, tags=["files"])
def get_file(request: HttpRequest, file_id: str):  # type: ignore[no-untyped-def]
    return _file(api_file_get(user=request.user, file_id=file_id))


@openai.delete("/files/{file_id}", response={200: dict, **ERRORS}, tags=["files"])
def delete_file(request: HttpRequest, file_id: str):  # type: ignore[no-untyped-def]
    api_file_delete(user=request.user, file_id=file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@openai.get("/files/{file_id}/content", response={200: None, **ERRORS}, tags=["files"])
def file_content(request: HttpRequest, file_id: str):  # type: ignore[no-untyped-def]
    file = api_file_get(user=request.user, file_id=file_id)
    response = HttpResponse(api_file_bytes(file), content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{file.public_id}"'
    return response


# --- vector stores ------------------------------------------------------------------------


def _store(kb: KnowledgeBase) -> dict[str, Any]:
    counts = file_counts(store_files_of(kb))
    return {
        "id": store_id(kb),
        "object": "vector_store",
        "created_at": _seconds(kb.created_at),
        "name": kb.name,
        "description": kb.description or None,
        "usage_bytes": store_usage(kb),
        "file_counts": counts,
        "status": "in_progress" if counts["in_progress"] else "completed",
        "last_active_at": _seconds(kb.updated_at),
        "expires_after": None,
        "expires_at": None,
        "metadata": kb.metadata or {},
    }


def _items(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(file id, attributes) from `file_ids` or `files: [{file_id, attributes}]`."""
    items: list[tuple[str, Any]] = []
    file_ids = body.get("file_ids") or []
    files = body.get("files") or []
    if not isinstance(file_ids, list) or not isinstance(files, list):
        raise HttpError(400, "file_ids and files must be lists")
    for file_id in file_ids:
        if not isinstance(file_id, str):
            raise HttpError(400, "file_ids holds file ids (strings)")
        items.append((file_id, body.get("attributes")))
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("file_id"), str):
            raise HttpError(400, "each of files is {file_id, attributes?}")
        items.append((entry["file_id"], entry.get("attributes")))
    return items


@openai.post("/vector_stores", response={200: dict, **ERRORS}, tags=["vector stores"])
def create_store(request: HttpRequest):  # type: ignore[no-untyped-def]
    body = _body(request)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise HttpError(400, "name must be a string")
    kb = vector_store_create(
        user=request.user,
        name=name,
        description=str(body.get("description") or ""),
        metadata=body.get("metadata"),
        chunking_strategy=body.get("chunking_strategy"),
    )
    items = _items(body)
    if items:
        store_files_add(kb=kb, user=request.user, items=items)
    return _store(kb)


@openai.get("/vector_stores", response={200: dict, **ERRORS}, tags=["vector stores"])
def list_stores(request: HttpRequest):  # type: ignore[no-untyped-def]
    kbs = list(vector_stores_of(request.user).order_by("-created_at", "-pk"))
    return _page(request, kbs, store_id, _store)


@openai.get(
    "/vector_stores/{vector_store_id}", response={200: dict, **ERRORS}, tags=["vector stores"]
)
def get_store(request: HttpRequest, vector_store_id: str):  # type: ignore[no-untyped-def]
    return _store(vector_store_get(user=request.user, vector_store_id=vector_store_id))


@openai.post(
    "/vector_stores/{vector_store_id}", response={200: dict, **ERRORS}, tags=["vector stores"]
)
def update_store(request: HttpRequest, vector_store_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id, change=True)
    body = _body(request)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise HttpError(400, "name must be a string")
    return _store(vector_store_update(kb=kb, name=name, metadata=body.get("metadata")))


@openai.delete(
    "/vector_stores/{vector_store_id}", response={200: dict, **ERRORS}, tags=["vector stores"]
)
def delete_store(request: HttpRequest, vector_store_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id, change=True)
    vector_store_delete(kb=kb)
    return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}


# --- vector store files -------------------------------------------------------------------


def _store_file(link: VectorStoreFile) -> dict[str, Any]:
    kb = link.knowledge_base
    return {
        "id": link.file.public_id,
        "object": "vector_store.file",
        "created_at": _seconds(link.created_at),
        "usage_bytes": link.document.size if link.document else 0,
        "vector_store_id": store_id(kb),
        "status": store_file_status(link),
        "last_error": store_file_error(link),
        "attributes": link.attributes or {},
        "chunking_strategy": {
            "type": "static",
            "static": {
                "max_chunk_size_tokens": kb.chunk_size,
                "chunk_overlap_tokens": kb.chunk_overlap,
            },
        },
    }


@openai.post(
    "/vector_stores/{vector_store_id}/files",
    response={200: dict, **ERRORS},
    tags=["vector store files"],
)
def add_store_file(request: HttpRequest, vector_store_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id, change=True)
    body = _body(request)
    file_id = body.get("file_id")
    if not isinstance(file_id, str):
        raise HttpError(400, "file_id is required")
    (link,) = store_files_add(
        kb=kb,
        user=request.user,
        items=[(file_id, body.get("attributes"))],
        chunking_strategy=body.get("chunking_strategy"),
    )
    return _store_file(link)


def _filtered_links(request: HttpRequest, links: list[VectorStoreFile]) -> list[VectorStoreFile]:
    wanted = request.GET.get("filter")
    if wanted and wanted not in ("in_progress", "completed", "failed", "cancelled"):
        raise HttpError(400, "filter is in_progress, completed, failed or cancelled")
    return [link for link in links if not wanted or store_file_status(link) == wanted]


@openai.get(
    "/vector_stores/{vector_store_id}/files",
    response={200: dict, **ERRORS},
    tags=["vector store files"],
)
def list_store_files(request: HttpRequest, vector_store_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id)
    links = _filtered_links(request, list(store_files_of(kb)))
    return _page(request, links, lambda link: link.file.public_id, _store_file)


@openai.get(
    "/vector_stores/{vector_store_id}/files/{file_id}",
    response={200: dict, **ERRORS},
    tags=["vector store files"],
)
def get_store_file(request: HttpRequest, vector_store_id: str, file_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id)
    return _store_file(store_file_get(kb=kb, file_id=file_id))


@openai.post(
    "/vector_stores/{vector_store_id}/files/{file_id}",
    response={200: dict, **ERRORS},
    tags=["vector store files"],
)
def update_store_file(request: HttpRequest, vector_store_id: str, file_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id, change=True)
    body = _body(request)
    if "attributes" not in body:
        raise HttpError(400, "attributes is required")
    link = store_file_update(
        link=store_file_get(kb=kb, file_id=file_id), attributes=body["attributes"]
    )
    return _store_file(link)


@openai.delete(
    "/vector_stores/{vector_store_id}/files/{file_id}",
    response={200: dict, **ERRORS},
    tags=["vector store files"],
)
def remove_store_file(request: HttpRequest, vector_store_id: str, file_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id, change=True)
    store_file_remove(kb=kb, link=store_file_get(kb=kb, file_id=file_id))
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


@openai.get(
    "/vector_stores/{vector_store_id}/files/{file_id}/content",
    response={200: dict, **ERRORS},
    tags=["vector store files"],
)
def store_file_content(request: HttpRequest, vector_store_id: str, file_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id)
    link = store_file_get(kb=kb, file_id=file_id)
    chunks = document_chunks(kb=kb, document=link.document) if link.document else []
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": chunk.text} for chunk in chunks],
        "has_more": False,
        "next_page": None,
    }


# --- file batches ---------------------------------------------------------------------------


def _batch(batch: VectorStoreFileBatch) -> dict[str, Any]:
    counts = file_counts(batch.files.select_related("document"))
    return {
        "id": batch.public_id,
        "object": "vector_store.files_batch",
        "created_at": _seconds(batch.created_at),
        "vector_store_id": store_id(batch.knowledge_base),
        "status": batch_status(batch, counts),
        "file_counts": counts,
    }


@openai.post(
    "/vector_stores/{vector_store_id}/file_batches",
    response={200: dict, **ERRORS},
    tags=["file batches"],
)
def create_batch(request: HttpRequest, vector_store_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id, change=True)
    body = _body(request)
    batch = batch_create(
        kb=kb,
        user=request.user,
        items=_items(body),
        chunking_strategy=body.get("chunking_strategy"),
    )
    return _batch(batch)


@openai.get(
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}",
    response={200: dict, **ERRORS},
    tags=["file batches"],
)
def get_batch(request: HttpRequest, vector_store_id: str, batch_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id)
    return _batch(batch_get(kb=kb, batch_id=batch_id))


@openai.post(
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel",
    response={200: dict, **ERRORS},
    tags=["file batches"],
)
def cancel_batch(request: HttpRequest, vector_store_id: str, batch_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id, change=True)
    return _batch(batch_cancel(batch=batch_get(kb=kb, batch_id=batch_id)))


@openai.get(
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}/files",
    response={200: dict, **ERRORS},
    tags=["file batches"],
)
def batch_files(request: HttpRequest, vector_store_id: str, batch_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id)
    batch = batch_get(kb=kb, batch_id=batch_id)
    links = _filtered_links(
        request, list(batch.files.select_related("file", "document", "knowledge_base"))
    )
    return _page(request, links, lambda link: link.file.public_id, _store_file)


# --- search ---------------------------------------------------------------------------------

_COMPARISONS = {"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"}


def attribute_predicate(spec: Any, depth: int = 0) -> Predicate:
    """OpenAI's comparison and compound filters as a predicate over attributes."""
    if depth > 8 or not isinstance(spec, dict):
        raise PredicateError("a filter is {type, key, value} or {type: and|or, filters}")
    kind = spec.get("type")
    if kind in ("and", "or"):
        inner = spec.get("filters")
        if not isinstance(inner, list) or not inner:
            raise PredicateError(f"an {kind!r} filter needs a non-empty list of filters")
        return compound(kind, [attribute_predicate(f, depth + 1) for f in inner])
    if kind not in _COMPARISONS:
        raise PredicateError(f"unknown filter type {kind!r}")
    if not isinstance(spec.get("key"), str):
        raise PredicateError("a comparison filter needs a key")
    return comparison(spec["key"], kind, spec.get("value"))


@openai.post(
    "/vector_stores/{vector_store_id}/search", response={200: dict, **ERRORS}, tags=["search"]
)
def search(request: HttpRequest, vector_store_id: str):  # type: ignore[no-untyped-def]
    kb = vector_store_get(user=request.user, vector_store_id=vector_store_id)
    body = _body(request)
    query = body.get("query")
    queries = query if isinstance(query, list) else [query]
    if not queries or not all(isinstance(q, str) and q.strip() and len(q) <= 2000 for q in queries):
        raise HttpError(400, "query is a string or a list of strings (1 to 2,000 characters)")
    limit = body.get("max_num_results", 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 50:
        raise HttpError(400, "max_num_results must be between 1 and 50")
    mode = {"vector": "vector", "keyword": "lexical", "hybrid": "hybrid"}.get(
        body.get("search_mode", "hybrid")
    )
    if mode is None:
        raise HttpError(400, "search_mode is vector, keyword or hybrid")
    ranking = body.get("ranking_options") or {}
    threshold = ranking.get("score_threshold") if isinstance(ranking, dict) else None
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float)
    ):
        raise HttpError(400, "ranking_options.score_threshold must be a number")
    links = list(store_files_of(kb).filter(document__isnull=False))
    document_ids: list[int] | None = None
    if body.get("filters") is not None:
        try:
            predicate = attribute_predicate(body["filters"])
        except PredicateError as exc:
            raise HttpError(400, f"filters: {exc}") from None
        document_ids = [
            link.document_id
            for link in links
            if link.document_id is not None and predicate.matches(link.attributes or {})
        ]
    by_document = {link.document_id: link for link in links}
    data: list[dict[str, Any]] = []
    seen: set[str] = set()
    for text in queries:
        if document_ids is not None and not document_ids:
            break
        where = (
            SearchFilter.build(document_ids=document_ids)
            if document_ids is not None
            else SearchFilter()
        )
        params = SearchParams(query=text, mode=mode, limit=limit, filter=where)  # type: ignore[arg-type]
        try:
            outcome = knowledge_base_search(kb=kb, params=params)
        except Conflict:
            break
        for hit in outcome.results:
            if hit.chunk_id in seen:
                continue
            score = _unit_score(mode, hit)
            if threshold is not None and score < threshold:
                continue
            seen.add(hit.chunk_id)
            link = by_document.get(hit.document_id)
            data.append(
                {
                    "file_id": link.file.public_id if link else f"doc-{hit.document_id}",
                    "filename": hit.citation.filename,
                    "score": score,
                    "attributes": (link.attributes if link else {}) or {},
                    "content": [{"type": "text", "text": hit.content}],
                }
            )
    data.sort(key=lambda item: -float(item["score"]))
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": data[:limit],
        "has_more": False,
        "next_page": None,
    }


def _unit_score(mode: str, hit: Any) -> float:
    """A score in 0-1, as OpenAI's: the cosine similarity (vector), BM25 squashed by
    x / (x + 10) (keyword), the fused score through the logistic function (hybrid)."""
    if mode == "vector":
        return round(max(0.0, min(1.0, hit.score)), 6)
    if mode == "lexical":
        return round(hit.score / (hit.score + 10.0), 6) if hit.score > 0 else 0.0
    return round(unit_score(hit.score), 6)
