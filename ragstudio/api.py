"""The one NinjaAPI, at /api/ (OpenAPI docs at /api/docs)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser

from ingestion.api import router as jobs_router
from ingestion.api import sources as sources_router
from knowledge_bases.api import keys as keys_router
from knowledge_bases.api import router as kb_router
from knowledge_bases.api import transfers as transfers_router
from ragstudio.auth import api_auth
from ragstudio.core.errors import RagStudioError, TooManyRequests
from search.api import evaluation as evaluation_router
from search.api import router as search_router


class JsonParser(Parser):
    """JSON bodies, and a form body with nothing in it (what many clients send for a POST
    without data) as an empty object: an operation whose body is optional takes it, one
    that needs fields answers 422 naming them, not 400."""

    def parse_body(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        content_type = request.content_type or ""
        form = content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))
        if form and not request.POST and not request.FILES:
            return {}
        return super().parse_body(request)


api = NinjaAPI(
    parser=JsonParser(),
    title="RAG Studio API",
    version="1",
    description="Knowledge bases, documents, ingestion jobs, generations and search. "
    "Authenticate with `Authorization: Bearer <token>` "
    "(create one with `manage.py api_token USER`).",
    auth=api_auth,
    urls_namespace="api",
)


@api.exception_handler(RagStudioError)
def _domain_error(request: HttpRequest, exc: RagStudioError) -> HttpResponse:
    response = api.create_response(
        request, {"message": exc.message, "extra": exc.extra}, status=exc.status_code
    )
    if isinstance(exc, TooManyRequests):
        response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = api.create_response(
        request,
        {"message": "authentication required: send 'Authorization: Bearer <token>'", "extra": {}},
        status=401,
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


_LOCATIONS = {"body", "query", "path", "form", "file", "payload"}


@api.exception_handler(NinjaValidationError)
def _validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    oversized = getattr(request, "oversized_uploads", [])
    missing = {str(e.get("loc", [""])[-1]) for e in exc.errors if e.get("type") == "missing"}
    if oversized and "files" in missing:
        # Every file was over the limit, so the request stopped reading them: say that,
        # not that the field is missing.
        limit = settings.RAGSTUDIO_MAX_UPLOAD_BYTES
        reason = f"file too large: over {limit:,} bytes (the limit)"
        return api.create_response(
            request,
            {
                "message": f"{oversized[0]}: {reason}",
                "extra": {"rejected": [{"filename": n, "reason": reason} for n in oversized]},
            },
            status=413,
        )
    errors = []
    for err in exc.errors:
        loc = [str(p) for p in err.get("loc", [])]
        # ("body", "payload", "query") -> "query": drop where it came from and the name
        # of the handler's body parameter, keep the field path (which may be "query").
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
        if len(loc) > 1 and loc[0] == "payload":
            loc = loc[1:]
        errors.append({"field": ".".join(loc) or None, "message": err.get("msg", "invalid")})
    first = errors[0] if errors else {"field": None, "message": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    return api.create_response(
        request,
        {"message": f"invalid request: {where}{first['message']}", "extra": {"errors": errors}},
        status=422,
    )


@api.exception_handler(SuspiciousOperation)
def _request_refused(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
    """Django refuses some requests while reading them (too many files or fields, a body
    over its limit); the API says so in JSON, like every other error, not an HTML page."""
    if isinstance(exc, RequestDataTooBig):
        status, message = 413, "the request body is too large"
    elif isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        status, message = 400, f"too many files in one request: at most {limit}"
    elif isinstance(exc, TooManyFieldsSent):
        status, message = 400, "too many form fields in one request"
    else:
        status, message = 400, "the request was refused as malformed"
    return api.create_response(request, {"message": message, "extra": {}}, status=status)


@api.exception_handler(MultiPartParserError)
def _multipart_refused(request: HttpRequest, exc: MultiPartParserError) -> HttpResponse:
    # Django reads part headers of at most 1,024 bytes: a file name of thousands of
    # characters ends the request here, before any file is seen.
    return api.create_response(
        request,
        {"message": f"the multipart body could not be read: {exc}", "extra": {}},
        status=400,
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return api.create_response(request, {"message": str(exc), "extra": {}}, status=exc.status_code)


api.add_router("/kbs", kb_router)
api.add_router("/kbs", search_router)
api.add_router("/kbs", evaluation_router)
api.add_router("/kbs", sources_router)
api.add_router("/jobs", jobs_router)
api.add_router("/keys", keys_router)
api.add_router("/transfers", transfers_router)
