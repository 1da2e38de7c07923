"""Uploads and ingestion jobs: the writes the web, the API and the CLI share."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from django.conf import settings
from django.db import transaction

from ingestion.models import IngestionJob
from ingestion.pipeline.parse import CONTENT_TYPES, detect_format
from ingestion.pipeline.types import DocumentError
from knowledge_bases.models import Document, Generation, KnowledgeBase
from knowledge_bases.services import generation_create, generation_for_ingest
from ragstudio.env import rag_settings
from ragstudio.errors import Conflict, NotFound, ValidationError

SNIFF_BYTES = 65536


@dataclass(frozen=True)
class IncomingFile:
    """One file from a form, an API call or the CLI: a name and its bytes, in pieces."""

    name: str
    chunks: Iterable[bytes]


@dataclass
class UploadResult:
    accepted: list[Document] = field(default_factory=list)
    duplicates: list[tuple[str, Document]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    job: IngestionJob | None = None


def _clean_name(name: str) -> str:
    base = PurePath((name or "").replace("\\", "/")).name.strip()
    base = "".join(ch for ch in base if ch.isprintable())
    return base[:255] or "upload"


def _store_stream(
    chunks: Iterable[bytes], directory: Path, max_bytes: int
) -> tuple[Path, str, int]:
    """Write to a temp file while hashing; stops as soon as the limit is passed."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in chunks:
                size += len(piece)
                if size > max_bytes:
                    raise DocumentError(f"file too large: over {max_bytes:,} bytes (the limit)")
                digest.update(piece)
                out.write(piece)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp), digest.hexdigest(), size


def _title_from(name: str) -> str:
    stem = PurePath(name).stem.replace("_", " ").replace("-", " ").strip()
    return (stem or name)[:500]


def documents_upload(
    *,
    kb: KnowledgeBase,
    files: Sequence[IncomingFile],
    user: Any = None,
    enqueue: bool = True,
    store_batch_size: int | None = None,
    embed_batch_size: int | None = None,
) -> UploadResult:
    """Store files, create Document rows (one per distinct content per KB) and queue one
    job for them. Empty, binary, unsupported and oversized files are rejected with a
    reason; the same content twice is reported as a duplicate, not stored twice."""
    if not files:
        raise ValidationError("no files were uploaded", {"field": "files"})
    _validate_batch_sizes(store_batch_size, embed_batch_size)
    upload_root = Path(rag_settings()["UPLOAD_DIR"]) / f"kb{kb.pk}"
    max_bytes = settings.RAGSTUDIO_MAX_UPLOAD_BYTES
    result = UploadResult()
    staged: list[tuple[str, Path, str, int, str]] = []
    seen: dict[str, str] = {}
    try:
        for incoming in files:
            name = _clean_name(incoming.name)
            try:
                tmp, sha, size = _store_stream(incoming.chunks, upload_root, max_bytes)
            except DocumentError as exc:
                result.rejected.append((name, str(exc)))
                continue
            try:
                with open(tmp, "rb") as fh:
                    fmt = detect_format(fh.read(SNIFF_BYTES), name)
            except DocumentError as exc:
                os.unlink(tmp)
                result.rejected.append((name, str(exc)))
                continue
            if sha in seen:
                os.unlink(tmp)
                result.rejected.append((name, f"duplicate of {seen[sha]!r} in this upload"))
                continue
            seen[sha] = name
            staged.append((name, tmp, sha, size, CONTENT_TYPES[fmt]))

        with transaction.atomic():
            existing = {
                d.sha256: d
                for d in Document.objects.filter(
                    knowledge_base=kb, sha256__in=[s[2] for s in staged]
                )
            }
            for name, tmp, sha, size, content_type in staged:
                if sha in existing:
                    result.duplicates.append((name, existing[sha]))
                    continue
                final = upload_root / sha[:2] / sha
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                result.accepted.append(
                    Document.objects.create(
                        knowledge_base=kb,
                        title=_title_from(name),
                        original_filename=name,
                        sha256=sha,
                        size=size,
                        content_type=content_type,
                        storage_path=str(final.relative_to(rag_settings()["UPLOAD_DIR"])),
                        uploaded_by=user if getattr(user, "pk", None) else None,
                    )
                )
            if result.accepted:
                result.job = ingestion_job_create(
                    kb=kb,
                    documents=result.accepted,
                    user=user,
                    enqueue=enqueue,
                    store_batch_size=store_batch_size,
                    embed_batch_size=embed_batch_size,
                )
    finally:
        for _, tmp, *_rest in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return result


def document_path(document: Document) -> Path:
    return Path(rag_settings()["UPLOAD_DIR"]) / document.storage_path


def _validate_batch_sizes(store_batch_size: int | None, embed_batch_size: int | None) -> None:
    if store_batch_size is not None and not 1 <= store_batch_size <= 100_000:
        raise ValidationError(
            "store_batch_size must be between 1 and 100000", {"field": "store_batch_size"}
        )
    if embed_batch_size is not None and not 1 <= embed_batch_size <= 2048:
        raise ValidationError(
            "embed_batch_size must be between 1 and 2048", {"field": "embed_batch_size"}
        )


def enqueue_job(job_id: int) -> None:
    from django_q.tasks import async_task

    async_task(
        "ingestion.tasks.run_ingestion_job",
        job_id,
        task_name=f"ingestion-job-{job_id}",
        group="ingestion",
    )


@transaction.atomic
def ingestion_job_create(
    *,
    kb: KnowledgeBase,
    documents: Sequence[Document],
    user: Any = None,
    enqueue: bool = True,
    store_batch_size: int | None = None,
    embed_batch_size: int | None = None,
) -> IngestionJob:
    """Queue a job for these documents, plus any of the KB's pending documents that no
    queued or running job holds (left behind by a cancelled or failed job)."""
    _validate_batch_sizes(store_batch_size, embed_batch_size)
    generation = generation_for_ingest(kb=kb, actor=user)
    held = Document.objects.filter(
        knowledge_base=kb,
        jobs__kind=IngestionJob.Kind.INGEST,  # a rebuild does not index into the active one
        jobs__status__in=[IngestionJob.Status.QUEUED, IngestionJob.Status.RUNNING],
    ).values("pk")
    orphans = Document.objects.filter(knowledge_base=kb, status=Document.Status.PENDING).exclude(
        pk__in=held
    )
    job = IngestionJob.objects.create(
        knowledge_base=kb,
        generation=generation,
        kind=IngestionJob.Kind.INGEST,
        store_batch_size=store_batch_size or rag_settings()["STORE_BATCH_SIZE"],
        embed_batch_size=embed_batch_size or rag_settings()["EMBED_BATCH_SIZE"],
        created_by=user if getattr(user, "pk", None) else None,
    )
    job.documents.set({d.pk for d in documents} | set(orphans.values_list("pk", flat=True)))
    job.documents_total = job.documents.count()
    job.save(update_fields=["documents_total"])
    if enqueue:
        transaction.on_commit(lambda: enqueue_job(job.pk))
    return job


@transaction.atomic
def ingestion_job_cancel(*, job: IngestionJob) -> IngestionJob:
    """A queued job is cancelled at once; a running one stops after flushing what it has
    embedded (the worker sees the request within a second)."""
    from django.utils import timezone

    job = IngestionJob.objects.select_for_update().get(pk=job.pk)
    if job.is_finished:
        raise Conflict(f"job {job.pk} has already finished ({job.status})")
    if job.status == IngestionJob.Status.QUEUED:
        job.status = IngestionJob.Status.CANCELLED
        job.finished_at = timezone.now()
    job.cancel_requested = True
    job.save(update_fields=["status", "finished_at", "cancel_requested"])
    return job


@transaction.atomic
def generation_rebuild_start(
    *,
    kb: KnowledgeBase,
    user: Any = None,
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    auto_promote: bool = False,
    enqueue: bool = True,
    store_batch_size: int | None = None,
    embed_batch_size: int | None = None,
) -> IngestionJob:
    """Build a new generation from all the KB's documents (with its settings or new ones)
    while the active one keeps serving and taking uploads."""
    _validate_batch_sizes(store_batch_size, embed_batch_size)
    kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
    running = IngestionJob.objects.filter(
        knowledge_base=kb,
        kind=IngestionJob.Kind.REBUILD,
        status__in=[IngestionJob.Status.QUEUED, IngestionJob.Status.RUNNING],
    ).first()
    if running is not None:
        raise Conflict(f"a rebuild is already in progress (job {running.pk})")
    if kb.active_generation_id is None:
        raise Conflict("this knowledge base has no active generation yet: ingest documents first")
    generation = generation_create(
        kb=kb,
        actor=user,
        note="rebuild",
        embedder=embedder,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )
    assert generation.status == Generation.Status.BUILDING
    job = IngestionJob.objects.create(
        knowledge_base=kb,
        generation=generation,
        kind=IngestionJob.Kind.REBUILD,
        auto_promote=auto_promote,
        store_batch_size=store_batch_size or rag_settings()["STORE_BATCH_SIZE"],
        embed_batch_size=embed_batch_size or rag_settings()["EMBED_BATCH_SIZE"],
        created_by=user if getattr(user, "pk", None) else None,
    )
    job.documents.set(Document.objects.filter(knowledge_base=kb))
    job.documents_total = job.documents.count()
    job.save(update_fields=["documents_total"])
    if enqueue:
        transaction.on_commit(lambda: enqueue_job(job.pk))
    return job


def document_delete(*, kb: KnowledgeBase, document_id: int) -> Document:
    """Remove a document: its rows from the active generation's stores, its stored file,
    its row. Refused (409) while a job of the KB is queued or running, since a job may be
    writing to the same stores (tantivy allows one writer) or be about to read the file.
    Archived generations keep their copy of its chunks: they are snapshots."""
    with transaction.atomic():
        KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
        document = Document.objects.filter(knowledge_base=kb, pk=document_id).first()
        if document is None:
            raise NotFound(f"document {document_id} not found in {kb.slug!r}")
        busy = IngestionJob.objects.filter(
            knowledge_base=kb,
            status__in=[IngestionJob.Status.QUEUED, IngestionJob.Status.RUNNING],
        ).first()
        if busy is not None:
            raise Conflict(
                f"job {busy.pk} is {busy.status}: delete documents when it has finished",
                {"job": busy.pk},
            )
        kb.refresh_from_db()
        if kb.active_generation is not None:
            from search.services import generation_store

            store = generation_store(kb.active_generation)
            store.delete_documents([document.pk])
            remaining = store.vectors.count()
            Generation.objects.filter(pk=kb.active_generation.pk).update(
                chunk_count=remaining, vector_count=remaining
            )
        path = document_path(document)
        deleted_id = document.pk
        document.delete()
        document.pk = deleted_id
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return document
