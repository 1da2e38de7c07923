"""Request limits enforced before, or while, Django reads a body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpRequest, HttpResponse, JsonResponse


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
