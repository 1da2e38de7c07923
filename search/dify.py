"""Dify's External Knowledge API: a Dify app searches a RAG Studio knowledge base.

The endpoint a user registers in Dify is ``https://host/dify``; Dify POSTs to
``/dify/retrieval`` with the API key typed there as a bearer key. Answers as Dify expects
them: records with ``content``, ``score`` (0 to 1), ``title`` and a ``metadata`` object
that always holds ``document_id`` as a string; errors as ``{"error_code", "error_msg"}``
(1001 malformed Authorization header, 1002 key refused: 403; 2001 knowledge base not
found: 404; a missing or invalid body: 400 or 422, never 404, which Dify's registration
probe would take for a wrong endpoint).

Scores: hybrid search's fused score mapped into 0-1 by the logistic function (0.5 is an
average match; Dify's ``score_threshold`` applies to that)."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from knowledge_bases.models import Document
from knowledge_bases.selectors import knowledge_base_get
from ragstudio.auth import bearer_token, request_key_user
from ragstudio.core.bounds import QUERY_MAX_CHARS, SEARCH_LIMIT
from ragstudio.core.errors import Conflict, NotFound, RagStudioError
from search.ranking.fusion import unit_score
from search.ranking.predicates import Predicate, PredicateError, comparison, compound
from search.ranking.results import SearchParams
from search.services import knowledge_base_search

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
MAX_BODY_BYTES = 1 << 20
# Dify's comparison operators -> ours.
OPERATORS = {
    "contains": "contains",
    "not contains": "not_contains",
    "start with": "starts_with",
    "end with": "ends_with",
    "is": "eq",
    "is not": "ne",
    "empty": "empty",
    "not empty": "not_empty",
    "in": "in",
    "not in": "nin",
    "=": "eq",
    "≠": "ne",
    ">": "gt",
    "<": "lt",
    "≥": "gte",
    "≤": "lte",
    "before": "before",
    "after": "after",
}


def _error(status: int, code: int, message: str) -> JsonResponse:
    return JsonResponse({"error_code": code, "error_msg": message}, status=status)


def metadata_predicate(condition: Any) -> Predicate | None:
    """Dify's ``metadata_condition`` as a predicate; None when absent or null."""
    if condition is None:
        return None
    if not isinstance(condition, dict):
        raise PredicateError("metadata_condition must be an object")
    logical = condition.get("logical_operator") or "and"
    items = condition.get("conditions") or []
    if not isinstance(items, list):
        raise PredicateError("metadata_condition.conditions must be a list")
    parts: list[Predicate] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str | list):
            raise PredicateError("each condition needs a 'name'")
        operator = item.get("comparison_operator")
        if operator not in OPERATORS:
            raise PredicateError(f"unknown comparison_operator {operator!r}")
        op, value = OPERATORS[operator], item.get("value")
        if op in ("in", "nin") and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        names = item["name"] if isinstance(item["name"], list) else [item["name"]]
        keys: list[Predicate] = [comparison(str(name), op, value) for name in names]
        parts.append(keys[0] if len(keys) == 1 else compound("or", keys))
    if not parts:
        return None
    return compound(str(logical).lower(), parts)


def _record(hit: Any, documents: dict[int, Document]) -> dict[str, Any]:
    citation = hit.citation
    document = documents.get(hit.document_id)
    metadata = {
        **hit.metadata,
        "document_id": str(hit.document_id),
        "doc_id": str(hit.document_id),
        "chunk_id": hit.chunk_id,
        "path": citation.filename,
        "filename": citation.filename,
        "title": citation.document_title or citation.title,
        "chunk": citation.chunk,
        "page": citation.page,
        "section": citation.section,
        "slide": citation.slide,
        "sheet": citation.sheet,
        "rows": citation.rows,
    }
    if document is not None:
        metadata["source"] = document.external_id or document.original_filename
    return {
        "content": hit.content,
        "score": round(unit_score(hit.score), 6),
        # The chunk's own title (its record's), else its document's.
        "title": citation.title or citation.document_title or citation.filename,
        "metadata": {k: v for k, v in metadata.items() if v is not None},
    }


@csrf_exempt
def retrieval(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":  # a health check
        return JsonResponse({"status": "ok"})
    if request.method != "POST":
        return _error(405, 1001, "use POST")
    token = bearer_token(request)
    if token is None:
        return _error(
            403, 1001, "Invalid Authorization header format. Expected 'Bearer <api-key>'."
        )
    user = request_key_user(request)
    if user is None:
        return _error(403, 1002, "Authorization failed: the key is unknown, revoked or expired")
    request.user = user  # for the request's log line and audit origin
    if len(request.body) > MAX_BODY_BYTES:
        return _error(400, 400, "the request body is too large")
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return _error(400, 400, "the body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, 400, "a JSON body with knowledge_id, query and retrieval_setting")
    knowledge_id, query = body.get("knowledge_id"), body.get("query")
    setting = body.get("retrieval_setting") or {}
    if not isinstance(knowledge_id, str) or not knowledge_id.strip():
        return _error(422, 422, "knowledge_id is required (a knowledge base's slug)")
    if not isinstance(query, str) or not query.strip() or len(query) > QUERY_MAX_CHARS:
        return _error(422, 422, f"query is required (1 to {QUERY_MAX_CHARS} characters)")
    if not isinstance(setting, dict):
        return _error(422, 422, "retrieval_setting must be an object")
    top_k = setting.get("top_k")
    threshold = setting.get("score_threshold")
    if top_k is None:
        top_k = DEFAULT_TOP_K
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= SEARCH_LIMIT.high:
        return _error(422, 422, f"retrieval_setting.top_k must be 1 to {SEARCH_LIMIT.high}")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold <= 1
    ):
        return _error(422, 422, "retrieval_setting.score_threshold must be between 0 and 1")
    try:
        predicate = metadata_predicate(body.get("metadata_condition"))
    except PredicateError as exc:
        return _error(422, 422, f"metadata_condition: {exc}")
    try:
        kb = knowledge_base_get(slug=knowledge_id.strip(), user=user)
    except NotFound:
        return _error(404, 2001, f"The knowledge base {knowledge_id!r} does not exist")
    except RagStudioError as exc:
        return _error(404, 2001, exc.message)
    params = SearchParams(query=query, mode="hybrid", limit=top_k, predicate=predicate)
    try:
        outcome = knowledge_base_search(kb=kb, params=params)
    except Conflict:  # nothing indexed yet: no records
        return JsonResponse({"records": []})
    ids = {hit.document_id for hit in outcome.results}
    documents = {
        d.pk: d
        for d in Document.objects.filter(knowledge_base=kb, pk__in=ids).only(
            "pk", "external_id", "original_filename"
        )
    }
    records = [_record(hit, documents) for hit in outcome.results]
    if threshold:
        records = [r for r in records if r["score"] >= threshold]
    return JsonResponse({"records": records})
