from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from ingestion.schemas import JobOut, SourceIn, SourceOut, SourceUpdateIn
from ingestion.selectors import job_get, source_get, sources_of
from ingestion.services import (
    ingestion_job_cancel,
    ingestion_job_retry,
    source_create,
    source_delete,
    source_sync_request,
    source_update,
)
from knowledge_bases.selectors import knowledge_base_get
from ragstudio.schemas import ERRORS

router = Router(tags=["ingestion jobs"])
sources = Router(tags=["sources"])


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


@sources.get("/{slug}/sources", response={200: list[SourceOut], **ERRORS})
def list_sources(request: HttpRequest, slug: str):  # type: ignore[no-untyped-def]
    return list(sources_of(knowledge_base_get(slug=slug, user=request.user)))


@sources.post("/{slug}/sources", response={201: SourceOut, **ERRORS})
def create_source(request: HttpRequest, slug: str, payload: SourceIn):  # type: ignore[no-untyped-def]
    """A source the knowledge base keeps itself in sync with. 422 naming the setting
    when it cannot be used: a folder outside the allowed roots, a private address, an
    environment variable that is not set."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    source = source_create(kb=kb, user=request.user, **payload.dict())
    return Status(201, source)


@sources.get("/{slug}/sources/{int:source_id}", response={200: SourceOut, **ERRORS})
def get_source(request: HttpRequest, slug: str, source_id: int):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user)
    return source_get(kb=kb, source_id=source_id)


@sources.patch("/{slug}/sources/{int:source_id}", response={200: SourceOut, **ERRORS})
def update_source(request: HttpRequest, slug: str, source_id: int, payload: SourceUpdateIn):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    source = source_get(kb=kb, source_id=source_id)
    return source_update(source=source, **payload.dict(exclude_none=True))


@sources.delete("/{slug}/sources/{int:source_id}", response={204: None, **ERRORS})
def delete_source(request: HttpRequest, slug: str, source_id: int):  # type: ignore[no-untyped-def]
    """The source goes; the documents it brought stay."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    source_delete(source=source_get(kb=kb, source_id=source_id))
    return Status(204, None)


@sources.post("/{slug}/sources/{int:source_id}/sync", response={202: SourceOut, **ERRORS})
def sync_source(request: HttpRequest, slug: str, source_id: int):  # type: ignore[no-untyped-def]
    """Sync now (in a worker): the source's status and stats say how it went."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    return Status(202, source_sync_request(source=source_get(kb=kb, source_id=source_id)))
