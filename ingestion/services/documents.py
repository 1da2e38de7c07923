"""Changes to one document: a new version from a file, an older version restored as a
new one, and deletion (every version)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from ingestion.models import IngestionJob
from ingestion.services.queue import ingestion_job_create
from ingestion.services.uploads import (
    IncomingFile,
    UploadResult,
    documents_upload,
    version_add,
)
from knowledge_bases.generations import (
    document_file_forget,
    document_read,
    generation_documents_delete,
)
from knowledge_bases.models import AuditEvent, Document, DocumentVersion, KnowledgeBase
from ragstudio.core.errors import Conflict, NotFound


def document_get(*, kb: KnowledgeBase, document_id: int) -> Document:
    document = Document.objects.filter(knowledge_base=kb, pk=document_id).first()
    if document is None:
        raise NotFound(f"document {document_id} not found in {kb.slug!r}")
    return document


def document_replace(
    *,
    kb: KnowledgeBase,
    document: Document,
    file: IncomingFile,
    user: Any = None,
    enqueue: bool = True,
    password: str = "",
) -> UploadResult:
    """A new version of ``document`` from ``file``, whatever the file is called; the
    same content is "unchanged". ``password`` opens it if it is encrypted."""
    return documents_upload(
        kb=kb, files=[file], user=user, enqueue=enqueue, document=document, password=password
    )


@transaction.atomic
def document_version_restore(
    *, kb: KnowledgeBase, document: Document, number: int, user: Any = None, enqueue: bool = True
) -> IngestionJob:
    """Version ``number``'s file again, as a new version (history only grows)."""
    KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
    document.refresh_from_db()
    old = DocumentVersion.objects.filter(document=document, number=number).first()
    if old is None:
        raise NotFound(f"document {document.pk} has no version {number}")
    if old.sha256 == document.sha256:
        raise Conflict(
            f"version {number} has the content of the current version {document.version}: "
            "nothing to restore",
            {"version": number},
        )
    version_add(
        document=document,
        sha256=old.sha256,
        size=old.size,
        content_type=old.content_type,
        storage_path=old.storage_path,
        filename=old.original_filename,
        user=user,
        note=f"restored from v{number}",
    )
    job = ingestion_job_create(kb=kb, documents=[document], user=user, enqueue=enqueue)
    AuditEvent.record(
        AuditEvent.Action.VERSION_RESTORE,
        actor=user,
        kb=kb,
        target=f"document {document.pk} {document.original_filename}",
        detail={"restored": number, "version": document.version, "job": job.pk},
    )
    return job


def document_delete(*, kb: KnowledgeBase, document_id: int) -> Document:
    """Remove a document: every version's rows from the active generation's stores, the
    files no other document or version uses, its rows. Refused (409) while a job of the
    KB is queued or running, since a job may be writing to the same stores (tantivy
    allows one writer) or be about to read the file. Archived generations keep their copy
    of its chunks: they are snapshots (dropped if one serves again)."""
    with transaction.atomic():
        KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
        document = document_get(kb=kb, document_id=document_id)
        busy = IngestionJob.objects.filter(knowledge_base=kb, status__in=IngestionJob.LIVE).first()
        if busy is not None:
            raise Conflict(
                f"job {busy.pk} is {busy.status}: delete documents when it has finished",
                {"job": busy.pk},
            )
        kb.refresh_from_db()
        if kb.active_generation is not None:
            generation_documents_delete(generation=kb.active_generation, document_ids=[document.pk])
        paths = set(document.versions.values_list("storage_path", flat=True)) | {
            document.storage_path
        }
        deleted_id = document.pk
        document.delete()
        document.pk = deleted_id
        AuditEvent.record(
            AuditEvent.Action.DOCUMENT_DELETE,
            kb=kb,
            target=f"document {deleted_id} {document.original_filename}",
            detail={"versions": document.version, "sha256": document.sha256},
        )
    files_forget_unused(kb, paths)
    return document


def files_forget_unused(kb: KnowledgeBase, paths: set[str]) -> None:
    """Delete the stored files no document or version of the KB names any more, checked
    under the KB's row lock, which uploads take to place their files: an upload of the same
    content that committed between the delete and this keeps its file."""
    for path in sorted(paths):
        with transaction.atomic():
            KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
            used = (
                DocumentVersion.objects.filter(
                    document__knowledge_base=kb, storage_path=path
                ).exists()
                or Document.objects.filter(knowledge_base=kb, storage_path=path).exists()
            )
            if not used:
                document_file_forget(path)


def document_file(document: Document) -> bytes:
    """The latest version's original bytes, as uploaded."""
    try:
        return document_read(document.storage_path)
    except FileNotFoundError:
        raise NotFound(f"the file of document {document.pk} is missing from storage") from None
