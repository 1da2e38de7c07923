from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from ingestion.schemas import JobOut
from ingestion.selectors import job_get
from ingestion.services import ingestion_job_cancel, ingestion_job_retry
from ragstudio.schemas import ERRORS

router = Router(tags=["ingestion jobs"])


@router.get("/{int:job_id}", response={200: JobOut, **ERRORS})
def get_job(request: HttpRequest, job_id: int):  # type: ignore[no-untyped-def]
    """A job with all its counters: embedded, persisted, buffered, skipped, errors,
    retries, rate (chunks/s) and ETA (seconds)."""
    return job_get(job_id=job_id, user=request.user)


@router.post("/{int:job_id}/cancel", response={200: JobOut, **ERRORS})
def cancel_job(request: HttpRequest, job_id: int):  # type: ignore[no-untyped-def]
    job = job_get(job_id=job_id, user=request.user, change=True)
    return ingestion_job_cancel(job=job)


@router.post("/{int:job_id}/retry", response={202: JobOut, **ERRORS})
def retry_job(request: HttpRequest, job_id: int):  # type: ignore[no-untyped-def]
    """Run a failed or cancelled job again: it resumes, reusing every row it already
    wrote. 409 for a job that is queued, running or succeeded."""
    job = job_get(job_id=job_id, user=request.user, change=True)
    return Status(202, ingestion_job_retry(job=job, user=request.user))
