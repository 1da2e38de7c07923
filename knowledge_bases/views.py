from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ingestion.services import IncomingFile, documents_upload
from knowledge_bases.forms import KnowledgeBaseForm, UploadForm
from knowledge_bases.selectors import knowledge_base_get, knowledge_bases_with_stats
from knowledge_bases.services import knowledge_base_create
from ragstudio.errors import RagStudioError
from ragstudio.views import get_or_404


@login_required
def kb_list(request: HttpRequest) -> HttpResponse:
    form = KnowledgeBaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            kb = knowledge_base_create(owner=request.user, **form.cleaned_data)
        except RagStudioError as exc:
            form.add_error(
                exc.extra.get("field") if exc.extra.get("field") in form.fields else None,
                exc.message,
            )
        else:
            messages.success(request, f"Created {kb.name}.")
            return redirect("kb-detail", slug=kb.slug)
    kbs = knowledge_bases_with_stats(request.user)
    return render(request, "knowledge_bases/list.html", {"kbs": kbs, "form": form})


@login_required
def kb_detail(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user)
    context = {
        "kb": kb,
        "documents": kb.documents.all()[:500],
        "jobs": kb.jobs.select_related("generation")[:20],
        "form": UploadForm(),
    }
    return render(request, "knowledge_bases/detail.html", context)


@login_required
@require_POST
def kb_upload(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Choose at least one file to upload.")
        return redirect("kb-detail", slug=kb.slug)
    try:
        result = documents_upload(
            kb=kb,
            files=[
                IncomingFile(name=f.name, chunks=f.chunks()) for f in form.cleaned_data["files"]
            ],
            user=request.user,
        )
    except RagStudioError as exc:
        messages.error(request, exc.message)
        return redirect("kb-detail", slug=kb.slug)
    for doc in result.accepted:
        messages.success(request, f"Accepted {doc.original_filename}.")
    for name, existing in result.duplicates:
        messages.warning(
            request, f"{name}: duplicate of {existing.original_filename}, not stored again."
        )
    for name, reason in result.rejected:
        messages.error(request, f"{name}: rejected ({reason}).")
    if result.job is not None:
        return redirect("job-detail", job_id=result.job.pk)
    return redirect("kb-detail", slug=kb.slug)
