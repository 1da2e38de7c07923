"""The Export / import page: a user's exports and imports with their progress, the
archive to download, and the form that imports one; a KB's Generations tab starts an
export."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from knowledge_bases.models import Transfer
from knowledge_bases.selectors import knowledge_base_get
from knowledge_bases.services.transfers import (
    transfer_archive,
    transfer_export_request,
    transfer_get,
    transfer_import_request,
    transfers_of,
)
from ragstudio.core.errors import RagStudioError
from ragstudio.views import file_attachment_response, get_or_404, is_htmx

SHOWN = 50


def _page(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    rows = list(transfers_of(request.user).filter(created_by_id=request.user.pk)[:SHOWN])
    context = {
        "transfers": rows,
        "live": any(t.status in Transfer.LIVE for t in rows),
        "import_error": error,
    }
    template = (
        "knowledge_bases/_transfers_table.html"
        if is_htmx(request)
        else "knowledge_bases/transfers.html"
    )
    return render(request, template, context, status=status)


@login_required
def transfers_page(request: HttpRequest) -> HttpResponse:
    return _page(request)


@login_required
@require_POST
def transfer_import_view(request: HttpRequest) -> HttpResponse:
    upload = request.FILES.get("archive")
    if upload is None or getattr(request, "oversized_uploads", []):
        error = (
            "the archive is larger than this server takes over HTTP: import it with "
            "`manage.py kb import`"
            if getattr(request, "oversized_uploads", [])
            else "choose an archive (a .ragkb file made by an export)"
        )
        return _page(request, error=error, status=422)
    try:
        transfer_import_request(
            chunks=upload.chunks(),
            user=request.user,
            slug=request.POST.get("slug", ""),
            documents_only=bool(request.POST.get("documents_only")),
        )
    except RagStudioError as exc:
        return _page(request, error=exc.message, status=exc.status_code)
    messages.success(request, f"Importing {upload.name}: it appears here when it is done.")
    return redirect("transfers")


@login_required
@require_POST
def kb_export_view(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    try:
        transfer_export_request(
            kb=kb, user=request.user, all_generations=bool(request.POST.get("all_generations"))
        )
    except RagStudioError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Exporting {kb.name}: download it here when it is done.")
    return redirect("transfers")


@login_required
def transfer_download(request: HttpRequest, transfer_id: int) -> HttpResponseBase:
    transfer = get_or_404(transfer_get, pk=transfer_id, user=request.user)
    try:
        path = transfer_archive(transfer)
    except RagStudioError as exc:
        messages.error(request, exc.message)
        return redirect("transfers")
    return file_attachment_response(path)
