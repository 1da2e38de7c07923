"""Request limits enforced before, or while, Django reads a body."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from knowledge_bases.services.limits import rate_limit_take
from ragstudio.auth import request_key_user


class RequestSizeLimitMiddleware:
    """Refuse a request whose declared body is over RAGSTUDIO_MAX_REQUEST_BYTES with 413,
    before any of it is read or spooled to disk (the per-file limit is checked while a
    file streams in; this one bounds a request of many files)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.RAGSTUDIO_MAX_REQUEST_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django answers a malformed length itself
        if length > limit:
            message = f"the request body is {length:,} bytes, over the limit of {limit:,}"
            if request.path.startswith("/api/"):
                return JsonResponse({"message": message, "extra": {"limit": limit}}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class FileSizeLimitUploadHandler(FileUploadHandler):
    """First of the upload handlers: a file that passes RAGSTUDIO_MAX_UPLOAD_BYTES stops
    here, and the rest of it is skipped instead of spooled to disk. Its name is noted on
    the request (``oversized_uploads``), so the upload can say why it is missing."""

    received = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > settings.RAGSTUDIO_MAX_UPLOAD_BYTES:
            if self.request is not None:
                names = getattr(self.request, "oversized_uploads", [])
                names.append(self.file_name or "upload")
                self.request.oversized_uploads = names  # type: ignore[attr-defined]
            raise SkipFile
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler stores the file


# (method, path) of the requests each per-user rate limit counts.
_RATED: list[tuple[str, re.Pattern[str], str]] = [
    ("search", re.compile(r"^/api/kbs/[^/]+/search/?$"), "POST"),
    ("search", re.compile(r"^/v1/vector_stores/[^/]+/search/?$"), "POST"),
    ("search", re.compile(r"^/dify/retrieval/?$"), "POST"),
    ("search", re.compile(r"^/mcp/?$"), "POST"),
    ("search", re.compile(r"^/kbs/[^/]+/search/?$"), "GET"),
    ("upload", re.compile(r"^/api/kbs/[^/]+/documents(?:/\d+)?/?$"), "POST PUT"),
    ("upload", re.compile(r"^/api/kbs/import/?$"), "POST"),
    ("upload", re.compile(r"^/v1/files/?$"), "POST"),
    ("upload", re.compile(r"^/kbs/[^/]+/(?:upload|documents/\d+/versions)/?$"), "POST"),
    ("upload", re.compile(r"^/transfers/import/?$"), "POST"),
]
_API_PREFIXES = ("/api/", "/dify/", "/mcp")


def rated_kind(method: str, path: str, query: Any) -> str | None:
    """Which per-user limit a request counts against, if any (a search page without a
    query is only the form)."""
    for kind, pattern, methods in _RATED:
        if method in methods.split() and pattern.match(path):
            if path.startswith("/kbs/") and method == "GET" and not query.get("q"):
                return None
            return kind
    return None


class RateLimitMiddleware:
    """Per-user limits on searches and uploads a minute (RAGSTUDIO_USER_SEARCHES_PER_MINUTE,
    RAGSTUDIO_USER_UPLOADS_PER_MINUTE): past one the request is answered 429 with
    Retry-After before its body is read. The user is the session's or the bearer key's."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        kind = rated_kind(request.method or "GET", request.path, request.GET)
        if kind is not None:
            user = getattr(request, "user", None)
            if not getattr(user, "is_authenticated", False):
                user = request_key_user(request)
            wait = rate_limit_take(user=user, kind=kind)
            if wait:
                return _too_many(request, kind, wait)
        return self.get_response(request)


def _too_many(request: HttpRequest, kind: str, wait: int) -> HttpResponse:
    setting = f"RAGSTUDIO_USER_{'SEARCHES' if kind == 'search' else 'UPLOADS'}_PER_MINUTE"
    what = "searches" if kind == "search" else "uploads"
    message = f"too many {what} a minute for one user ({setting}): try again in {wait} s"
    response: HttpResponse
    if request.path.startswith("/v1/"):
        response = JsonResponse(
            {
                "error": {
                    "message": message,
                    "type": "rate_limit_exceeded",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            status=429,
        )
    elif request.path.startswith(_API_PREFIXES):
        response = JsonResponse(
            {"message": message, "extra": {"limit": kind, "retry_after": wait}}, status=429
        )
    else:
        response = render(
            request,
            "_error.html",
            {"code": 429, "heading": "Too many requests", "text": message},
            status=429,
        )
    response["Retry-After"] = str(wait)
    return response
