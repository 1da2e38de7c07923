from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ingestion.charts import throughput_chart
from ingestion.models import IngestionJob
from ingestion.selectors import job_get
from ingestion.services import ingestion_job_cancel, ingestion_job_retry
from ingestion.services.queue import RETRYABLE
from knowledge_bases.selectors import knowledge_base_can_change, knowledge_base_ref
from ragstudio.core.errors import Conflict, RagStudioError
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
