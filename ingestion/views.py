from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ingestion.selectors import job_get
from ingestion.services import ingestion_job_cancel
from ragstudio.errors import Conflict, NotFound


def _job_or_404(job_id: int, user: object):  # type: ignore[no-untyped-def]
    try:
        return job_get(job_id=job_id, user=user)
    except NotFound as exc:
        raise Http404(exc.message) from None


@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(job_id, request.user)
    template = "ingestion/_progress.html" if request.htmx else "ingestion/job.html"
    return render(request, template, {"job": job})


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(job_id, request.user)
    try:
        ingestion_job_cancel(job=job)
    except Conflict as exc:
        messages.error(request, exc.message)
    return redirect("job-detail", job_id=job.pk)
