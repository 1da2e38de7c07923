from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ingestion.selectors import job_get
from ingestion.services import ingestion_job_cancel
from ragstudio.errors import Conflict
from ragstudio.views import get_or_404


@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_or_404(job_get, job_id=job_id, user=request.user)
    is_htmx = bool(getattr(request, "htmx", False))  # django-htmx middleware
    template = "ingestion/_progress.html" if is_htmx else "ingestion/job.html"
    return render(request, template, {"job": job})


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_or_404(job_get, job_id=job_id, user=request.user)
    try:
        ingestion_job_cancel(job=job)
    except Conflict as exc:
        messages.error(request, exc.message)
    return redirect("job-detail", job_id=job.pk)
