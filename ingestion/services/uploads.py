"""Uploads and deletes of documents: the writes the web, the API and the CLI share."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from ingestion.models import IngestionJob
from ingestion.pipeline.parse import CONTENT_TYPES, SNIFF_BYTES, detect_format
from ingestion.services.queue import batch_sizes_validate, ingestion_job_create
from knowledge_bases.generations import (
    document_file_forget,
    document_file_share,
    generation_documents_delete,
    upload_dir,
    upload_local_path,
    upload_storage_path,
)
from knowledge_bases.models import Document, KnowledgeBase
from ragstudio.core.errors import Conflict, NotFound, ValidationError
from ragstudio.core.types import DocumentError
from ragstudio.env import rag_settings


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


def _sniff_head(fh: BinaryIO) -> bytes:
    """A few KB to sniff the format from, starting at the first byte that is not white
    space (a file may open with any amount of it, and is empty only if it is all that)."""
    while block := fh.read(65536):
        stripped = block.lstrip()
        if stripped:
            fh.seek(fh.tell() - len(stripped))
            return fh.read(SNIFF_BYTES)
    return b""


def _storage_quota(kb: KnowledgeBase) -> tuple[int, int] | None:
    """(bytes the KB's owner stores across their KBs, their limit), or None: no limit
    (staff, no owner, or RAGSTUDIO_QUOTA_BYTES=0)."""
    limit = rag_settings()["QUOTA_BYTES"]
    owner = kb.owner
    if not limit or owner is None or owner.is_staff:
        return None
    used = Document.objects.filter(knowledge_base__owner=owner).aggregate(n=Sum("size"))["n"]
    return int(used or 0), limit


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
    oversized: Sequence[str] = (),
) -> UploadResult:
    """Store files, create Document rows (one per distinct content per KB) and queue one
    job for them. Empty, binary, unsupported and oversized files are rejected with a
    reason; the same content twice is reported as a duplicate, not stored twice.
    ``oversized`` names files the request stopped reading at the size limit."""
    if not files and not oversized:
        raise ValidationError("no files were uploaded", {"field": "files"})
    batch_sizes_validate(store_batch_size, embed_batch_size)
    upload_root = upload_dir(kb.pk)
    max_bytes = settings.RAGSTUDIO_MAX_UPLOAD_BYTES
    result = UploadResult()
    for name in oversized:
        result.rejected.append(
            (_clean_name(name), f"file too large: over {max_bytes:,} bytes (the limit)")
        )
    staged: list[tuple[str, Path, str, int, str]] = []
    seen: dict[str, str] = {}
    quota = _storage_quota(kb)
    try:
        for incoming in files:
            name = _clean_name(incoming.name)
            try:
                tmp, sha, size = _store_stream(incoming.chunks, upload_root, max_bytes)
            except DocumentError as exc:
                result.rejected.append((name, str(exc)))
                continue
            if quota is not None:
                used, limit = quota
                if used + size > limit:
                    os.unlink(tmp)
                    result.rejected.append(
                        (name, f"over the storage quota: {used:,} of {limit:,} bytes used")
                    )
                    continue
                quota = (used + size, limit)
            try:
                with open(tmp, "rb") as fh:
                    fmt = detect_format(_sniff_head(fh), name)
            except DocumentError as exc:
                os.unlink(tmp)
                result.rejected.append((name, str(exc)))
                continue
            except Exception as exc:  # a file no sniffing rule expected: its own verdict
                os.unlink(tmp)
                result.rejected.append((name, f"unreadable file ({type(exc).__name__})"))
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
                storage_path = upload_storage_path(kb.pk, sha)
                final = upload_local_path(storage_path)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                # Shared before its row exists: a worker on another host reads it from there.
                document_file_share(storage_path)
                result.accepted.append(
                    Document.objects.create(
                        knowledge_base=kb,
                        title=_title_from(name),
                        original_filename=name,
                        sha256=sha,
                        size=size,
                        content_type=content_type,
                        storage_path=storage_path,
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
        busy = IngestionJob.objects.filter(knowledge_base=kb, status__in=IngestionJob.LIVE).first()
        if busy is not None:
            raise Conflict(
                f"job {busy.pk} is {busy.status}: delete documents when it has finished",
                {"job": busy.pk},
            )
        kb.refresh_from_db()
        if kb.active_generation is not None:
            generation_documents_delete(generation=kb.active_generation, document_ids=[document.pk])
        deleted_id = document.pk
        document.delete()
        document.pk = deleted_id
    document_file_forget(document.storage_path)
    return document
