from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ingestion.charts import throughput_chart
from ingestion.forms import SourceForm
from ingestion.models import IngestionJob
from ingestion.selectors import job_get, source_get, sources_of
from ingestion.services import (
    ingestion_job_cancel,
    ingestion_job_retry,
    source_create,
    source_delete,
    source_sync_request,
)
from ingestion.services.queue import RETRYABLE
from knowledge_bases.models import KnowledgeBase
from knowledge_bases.selectors import (
    knowledge_base_can_change,
    knowledge_base_get,
    knowledge_base_ref,
)
from ragstudio.core.errors import Conflict, RagStudioError
from ragstudio.env import rag_settings
from ragstudio.views import get_or_404, is_htmx


def _render(request: HttpRequest, job: IngestionJob) -> HttpResponse:
    template = "ingestion/_progress.html" if is_htmx(request) else "ingestion/job.html"
    context = {
        "job": job,
        "kb_ref": knowledge_base_ref(job.knowledge_base, request.user),
        "chart": throughput_chart(job.samples),
        "can_change": knowledge_base_can_change(job.knowledge_base, request.user),
        "retryable": RETRYABLE,
    }
    return render(request, template, context)


@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """The job page; its progress fragment for htmx polls (every second until it ends)."""
    return _render(request, get_or_404(job_get, job_id=job_id, user=request.user))


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_or_404(job_get, job_id=job_id, user=request.user, change=True)
    try:
        job = ingestion_job_cancel(job=job)
    except Conflict as exc:
        messages.error(request, exc.message)
    if is_htmx(request):
        return _render(request, job_get(job_id=job.pk, user=request.user))
    return redirect("job-detail", job_id=job.pk)


@login_required
@require_POST
def job_retry(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_or_404(job_get, job_id=job_id, user=request.user, change=True)
    try:
        job = ingestion_job_retry(job=job, user=request.user)
    except RagStudioError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Job #{job.pk} is queued again.")
    return redirect("job-detail", job_id=job.pk)


# --- sources --------------------------------------------------------------------------


def _sources_page(
    request: HttpRequest, kb: KnowledgeBase, form: SourceForm | None = None, status: int = 200
) -> HttpResponse:
    context = {
        "kb": kb,
        "kb_ref": knowledge_base_ref(kb, request.user),
        "sources": list(sources_of(kb)),
        "can_change": knowledge_base_can_change(kb, request.user),
        "form": form or SourceForm(),
        "roots": rag_settings()["SOURCE_FOLDER_ROOTS"],
    }
    template = "ingestion/_sources.html" if is_htmx(request) else "ingestion/sources.html"
    return render(request, template, context, status=status)


@login_required
def kb_sources(request: HttpRequest, slug: str) -> HttpResponse:
    """The KB's sources with their status line; a form adds one."""
    kb = get_or_404(
        knowledge_base_get, slug=slug, user=request.user, change=request.method == "POST"
    )
    if request.method != "POST":
        return _sources_page(request, kb)
    form = SourceForm(request.POST)
    if form.is_valid():
        try:
            source = source_create(
                kb=kb,
                name=form.cleaned_data["name"],
                kind=form.cleaned_data["kind"],
                config=form.config(),
                schedule_minutes=form.cleaned_data["schedule_minutes"],
                delete_missing=form.cleaned_data["delete_missing"],
                user=request.user,
            )
        except RagStudioError as exc:
            form.add_error("location" if exc.extra.get("field") == "config" else None, exc.message)
        else:
            source_sync_request(source=source)
            messages.success(
                request, f"Added the source {source.name}; its first sync is on its way."
            )
            return redirect("kb-sources", slug=knowledge_base_ref(kb, request.user))
    return _sources_page(request, kb, form, status=422)


@login_required
@require_POST
def kb_source_action(request: HttpRequest, slug: str, source_id: int, action: str) -> HttpResponse:
    """sync (now, in a worker) or delete (the source; its documents stay)."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    source = get_or_404(source_get, kb=kb, source_id=source_id)
    if action == "sync":
        source_sync_request(source=source)
        messages.success(request, f"Syncing {source.name}: the status below follows it.")
    elif action == "delete":
        source_delete(source=source)
        messages.success(request, f"Removed the source {source.name}; its documents stay.")
    else:
        raise Http404(f"no source action {action!r}")
    if is_htmx(request):
        return _sources_page(request, kb)
    return redirect("kb-sources", slug=knowledge_base_ref(kb, request.user))
