from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.core.exceptions import BadRequest, PermissionDenied
from django.db import connection
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found

from ragstudio.core.errors import Ambiguous, Forbidden, NotFound
from ragstudio.readiness import dependency_checks, preload_in_background, readiness

T = TypeVar("T")


def get_or_404(selector: Callable[..., T], **kwargs: Any) -> T:
    """Call a selector; its NotFound (someone else's object, or none) becomes a 404 page,
    its Forbidden (read-only access to a change) a 403 page, its Ambiguous (a name that
    matches several objects the user sees, in a hand-typed address) a 400 page."""
    try:
        return selector(**kwargs)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except Ambiguous as exc:
        raise BadRequest(exc.message) from None


def attachment_response(data: bytes, filename: str, content_type: str) -> HttpResponse:
    """A file to download, never shown inline (an uploaded HTML page or SVG must not run
    in the app's origin)."""
    response = HttpResponse(data, content_type=content_type or "application/octet-stream")
    safe = "".join(c if c.isprintable() and c not in '"\\' else "_" for c in filename) or "file"
    response["Content-Disposition"] = f'attachment; filename="{safe}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response


def file_attachment_response(path: Path) -> FileResponse:
    """A file on disk to download (streamed, never read whole into memory)."""
    response = FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
    response["X-Content-Type-Options"] = "nosniff"
    return response


def is_htmx(request: HttpRequest) -> bool:
    """A request made by htmx (django-htmx's middleware): answer with the fragment."""
    return bool(getattr(request, "htmx", False))


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404s: JSON under /api/ (a path no route matches, such as /api/jobs/abc, is still
    an API answer), the app's own page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"message": f"not found: {request.path}", "extra": {}}, status=404)
    return page_not_found(request, exception)


def healthz(_request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers (nothing else is checked)."""
    return JsonResponse({"status": "ok"})


def readyz(_request: HttpRequest) -> JsonResponse:
    """Readiness: the database, the task broker and the store answer, and this process has
    loaded its models (503 until then). A process that no hook preloaded starts loading on
    the first ask."""
    state = readiness()
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", said in the body
        checks["database"] = f"unavailable: {type(exc).__name__}"
    checks.update(dependency_checks())
    if state.done.is_set():
        checks["models"] = "ok"
    else:
        preload_in_background("web")
        checks["models"] = "loading"
    ready = all(v == "ok" for v in checks.values())
    body = {
        "ready": ready,
        "checks": checks,
        "models": state.models,
        "preload_seconds": round(state.seconds, 2) if state.done.is_set() else None,
    }
    return JsonResponse(body, status=200 if ready else 503)
