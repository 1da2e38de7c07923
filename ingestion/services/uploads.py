"""Uploads of documents: the writes the web, the API, the CLI and sources share. A file
whose name (or external id) a document of the knowledge base already has becomes a new
version of that document, unless the caller asks for a separate document."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, transaction
from django.db.models import Max, Sum

from ingestion.models import IngestionJob
from ingestion.pipeline.decrypt import may_be_encrypted
from ingestion.pipeline.parse import CONTENT_TYPES, SNIFF_BYTES, detect_format
from ingestion.pipeline.sandbox import ParseSandbox
from ingestion.services.queue import batch_sizes_validate, ingestion_job_create, job_limits_check
from knowledge_bases.generations import (
    document_file_share,
    upload_dir,
    upload_local_path,
    upload_storage_path,
)
from knowledge_bases.models import AuditEvent, Document, DocumentVersion, KnowledgeBase
from ragstudio.core.errors import ValidationError
from ragstudio.core.types import DocumentError
from ragstudio.env import rag_settings


@dataclass(frozen=True)
class IncomingFile:
    """One file from a form, an API call or the CLI: a name and its bytes, in pieces."""

    name: str
    chunks: Iterable[bytes]
    # The document's identity when it is not its file name (the API, a source).
    external_id: str = ""


class UploadMode(StrEnum):
    REPLACE = "replace"  # a known name or external id: a new version of that document
    NEW = "new"  # always a separate document


@dataclass
class UploadResult:
    accepted: list[Document] = field(default_factory=list)  # new documents
    versions: list[Document] = field(default_factory=list)  # new versions of documents
    unchanged: list[tuple[str, Document]] = field(default_factory=list)  # same content
    duplicates: list[tuple[str, Document]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    job: IngestionJob | None = None
    # Each file's verdict by its position in the upload: "accepted", "version",
    # "unchanged", "duplicate" or "rejected", with its document and the reason.
    verdicts: dict[int, tuple[str, Document | None, str]] = field(default_factory=dict)

    @property
    def queued(self) -> list[Document]:
        return [*self.accepted, *self.versions]


# A password for encrypted files longer than this is no password (PDF allows 127 bytes).
MAX_PASSWORD_CHARS = 1024
# An upload's audit event names this many of its files (the counts cover them all).
AUDIT_NAMES = 20


def clean_name(name: str) -> str:
    """A file name as stored: its last path part, printable characters only, 255 at most."""
    base = PurePath((name or "").replace("\\", "/")).name.strip()
    base = "".join(ch for ch in base if ch.isprintable())
    return base[:255] or "upload"


def store_stream(chunks: Iterable[bytes], directory: Path, max_bytes: int) -> tuple[Path, str, int]:
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
    return storage_quota(kb.owner)


def storage_quota(owner: Any) -> tuple[int, int] | None:
    """(bytes ``owner`` stores across their KBs, their limit), or None: no limit (staff,
    no owner, or RAGSTUDIO_QUOTA_BYTES=0)."""
    limit = rag_settings()["QUOTA_BYTES"]
    if not limit or owner is None or getattr(owner, "is_staff", False):
        return None
    used = DocumentVersion.objects.filter(document__knowledge_base__owner=owner).aggregate(
        n=Sum("size")
    )["n"]
    return int(used or 0), limit


PLACE_ATTEMPTS = 3


def _is_lock_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure the database resolved by aborting us."""
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) in {"40P01", "40001"}


def _copy(result: UploadResult) -> UploadResult:
    return UploadResult(
        accepted=list(result.accepted),
        versions=list(result.versions),
        unchanged=list(result.unchanged),
        duplicates=list(result.duplicates),
        rejected=list(result.rejected),
        job=result.job,
        verdicts=dict(result.verdicts),
    )


def _over_quota(used: int, limit: int) -> str:
    return f"over the storage quota: {used:,} of {limit:,} bytes used"


def _content_known(kb: KnowledgeBase, sha256: str) -> bool:
    """The knowledge base stores these bytes already (an upload of them stores nothing)."""
    return DocumentVersion.objects.filter(document__knowledge_base=kb, sha256=sha256).exists()


def _title_from(name: str) -> str:
    stem = PurePath(name).stem.replace("_", " ").replace("-", " ").strip()
    return (stem or name)[:500]


class _Opener:
    """Opens an upload's encrypted files with the password given with it, in the parsing
    sandbox (one child for the whole upload, started at the first file that may need it).
    The decrypted file replaces the upload: it is what gets stored and read again on every
    rebuild, so the password is never kept."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.sandbox: ParseSandbox | None = None

    def open(
        self, tmp: Path, sha: str, size: int, directory: Path, max_bytes: int
    ) -> tuple[Path, str, int]:
        with open(tmp, "rb") as fh:
            if not may_be_encrypted(fh.read(1024)):
                return tmp, sha, size  # no child started for files no password opens
        if self.sandbox is None:
            config = rag_settings()
            self.sandbox = ParseSandbox(
                config["PARSE_TIMEOUT_SECONDS"] or 60.0, memory_mb=config["PARSE_MEMORY_MB"]
            )
        try:
            opened = self.sandbox.decrypt(tmp.read_bytes(), self.password, max_bytes=max_bytes)
        except DocumentError:
            tmp.unlink(missing_ok=True)
            raise
        if opened is None:
            return tmp, sha, size
        tmp.unlink(missing_ok=True)
        return store_stream([opened], directory, max_bytes)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()


@dataclass(frozen=True)
class _Staged:
    index: int
    name: str
    tmp: Path
    sha256: str
    size: int
    content_type: str
    external_id: str


def _stage(
    files: Sequence[IncomingFile],
    kb: KnowledgeBase,
    result: UploadResult,
    opener: _Opener | None = None,
) -> list[_Staged]:
    """Each file streamed to a temp file, hashed, size-checked, opened with the upload's
    password if it is encrypted, quota-checked and sniffed; the rejected ones recorded with
    their reason."""
    upload_root = upload_dir(kb.pk)
    max_bytes = settings.RAGSTUDIO_MAX_UPLOAD_BYTES
    staged: list[_Staged] = []
    seen: dict[str, str] = {}
    quota = _storage_quota(kb)
    for index, incoming in enumerate(files):
        name = clean_name(incoming.name)
        try:
            tmp, sha, size = store_stream(incoming.chunks, upload_root, max_bytes)
            if opener is not None:
                tmp, sha, size = opener.open(tmp, sha, size, upload_root, max_bytes)
        except DocumentError as exc:
            result.rejected.append((name, str(exc)))
            result.verdicts[index] = ("rejected", None, str(exc))
            continue
        reason = ""
        if quota is not None:
            used, limit = quota
            if used + size > limit:
                reason = _over_quota(used, limit)
            else:
                quota = (used + size, limit)
        fmt = ""
        if not reason:
            try:
                with open(tmp, "rb") as fh:
                    # Containers (zip, OLE) are told apart by their directory: the file.
                    fmt = detect_format(_sniff_head(fh), name, file=fh)
            except DocumentError as exc:
                reason = str(exc)
            except Exception as exc:  # a file no sniffing rule expected: its own verdict
                reason = f"unreadable file ({type(exc).__name__})"
        if not reason and sha in seen:
            reason = f"duplicate of {seen[sha]!r} in this upload"
        if reason:
            os.unlink(tmp)
            result.rejected.append((name, reason))
            result.verdicts[index] = ("rejected", None, reason)
            continue
        seen[sha] = name
        external_id = (incoming.external_id or "").strip()[:500]
        staged.append(_Staged(index, name, tmp, sha, size, CONTENT_TYPES[fmt], external_id))
    return staged


def _identity(kb: KnowledgeBase, item: _Staged) -> Document | None:
    """The document a file is a version of: the one with its external id, else the
    newest with its name (and no external id)."""
    documents = Document.objects.filter(knowledge_base=kb)
    if item.external_id:
        return documents.filter(external_id=item.external_id).first()
    return (
        documents.filter(original_filename=item.name, external_id="")
        .order_by("-updated_at", "-pk")
        .first()
    )


def _keep_file(kb: KnowledgeBase, item: _Staged) -> str:
    """Move a staged file to where its content lives (content-addressed: a file already
    there is the same bytes) and share it with the other hosts; its storage path."""
    storage_path = upload_storage_path(kb.pk, item.sha256)
    final = upload_local_path(storage_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if item.tmp.exists() or not final.exists():  # moved already by an attempt rolled back
        os.replace(item.tmp, final)
    # Shared before its row exists: a worker on another host reads it from there.
    document_file_share(storage_path)
    return storage_path


def version_add(
    *,
    document: Document,
    sha256: str,
    size: int,
    content_type: str,
    storage_path: str,
    filename: str,
    user: Any = None,
    note: str = "uploaded",
) -> Document:
    """A new version of ``document`` (its latest, to be indexed: pending)."""
    number = (document.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    uploader = user if getattr(user, "pk", None) else None
    DocumentVersion.objects.create(
        document=document,
        number=number,
        sha256=sha256,
        size=size,
        content_type=content_type,
        storage_path=storage_path,
        original_filename=filename,
        uploaded_by=uploader,
        note=note[:200],
    )
    document.version = number
    document.sha256, document.size, document.content_type = sha256, size, content_type
    document.storage_path, document.original_filename = storage_path, filename
    document.status, document.error_message = Document.Status.PENDING, ""
    document.uploaded_by = uploader
    document.save()
    return document


def _document_add(kb: KnowledgeBase, item: _Staged, storage_path: str, user: Any) -> Document:
    document = Document.objects.create(
        knowledge_base=kb,
        title=_title_from(item.name),
        original_filename=item.name,
        external_id=item.external_id,
        sha256=item.sha256,
        size=item.size,
        content_type=item.content_type,
        storage_path=storage_path,
        uploaded_by=user if getattr(user, "pk", None) else None,
    )
    DocumentVersion.objects.create(
        document=document,
        number=1,
        sha256=item.sha256,
        size=item.size,
        content_type=item.content_type,
        storage_path=storage_path,
        original_filename=item.name,
        uploaded_by=document.uploaded_by,
        note="uploaded",
    )
    return document


def _place(
    kb: KnowledgeBase,
    item: _Staged,
    mode: UploadMode,
    user: Any,
    result: UploadResult,
    target: Document | None,
) -> None:
    """One staged file: a new document, a new version, unchanged, or a duplicate."""
    if target is None and mode == UploadMode.REPLACE:
        target = _identity(kb, item)
    if mode == UploadMode.NEW and item.external_id and _identity(kb, item) is not None:
        reason = f"a document with external id {item.external_id!r} exists already"
        result.rejected.append((item.name, reason))
        result.verdicts[item.index] = ("rejected", None, reason)
        return
    if target is not None and target.sha256 == item.sha256:
        result.unchanged.append((item.name, target))
        result.verdicts[item.index] = ("unchanged", target, "")
        return
    same = Document.objects.filter(knowledge_base=kb, sha256=item.sha256)
    if target is not None:
        same = same.exclude(pk=target.pk)
    duplicate = same.first()
    if duplicate is not None:
        result.duplicates.append((item.name, duplicate))
        result.verdicts[item.index] = (
            "duplicate",
            duplicate,
            f"the same content as {duplicate.original_filename}",
        )
        return
    storage_path = _keep_file(kb, item)
    if target is None:
        document = _document_add(kb, item, storage_path, user)
        result.accepted.append(document)
        result.verdicts[item.index] = ("accepted", document, "")
        return
    version_add(
        document=target,
        sha256=item.sha256,
        size=item.size,
        content_type=item.content_type,
        storage_path=storage_path,
        filename=item.name,
        user=user,
    )
    result.versions.append(target)
    result.verdicts[item.index] = ("version", target, "")


@transaction.atomic
def _place_staged(
    kb: KnowledgeBase,
    staged: Sequence[_Staged],
    result: UploadResult,
    *,
    mode: UploadMode,
    user: Any,
    document: Document | None,
    enqueue: bool,
    store_batch_size: int | None,
    embed_batch_size: int | None,
) -> None:
    """The staged files as documents or versions, and their job, in one transaction."""
    # One upload at a time per knowledge base: identities and duplicates are decided
    # against what the others stored.
    KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
    if document is not None:
        document.refresh_from_db()
    # The quota again, now that uploads of this owner take turns: checked while staging
    # only, two parallel uploads could each pass it alone.
    if kb.owner_id is not None:
        get_user_model().objects.select_for_update().filter(pk=kb.owner_id).first()
    quota = _storage_quota(kb)
    for item in staged:
        stored = len(result.queued)
        over = quota is not None and quota[0] + item.size > quota[1]
        if quota is not None and over and not _content_known(kb, item.sha256):
            reason = _over_quota(*quota)
            result.rejected.append((item.name, reason))
            result.verdicts[item.index] = ("rejected", None, reason)
            continue
        _place(kb, item, mode, user, result, document)
        if quota is not None and len(result.queued) > stored:
            quota = (quota[0] + item.size, quota[1])
    if result.queued:
        result.job = ingestion_job_create(
            kb=kb,
            documents=result.queued,
            user=user,
            enqueue=enqueue,
            store_batch_size=store_batch_size,
            embed_batch_size=embed_batch_size,
        )


def documents_upload(
    *,
    kb: KnowledgeBase,
    files: Sequence[IncomingFile],
    user: Any = None,
    enqueue: bool = True,
    store_batch_size: int | None = None,
    embed_batch_size: int | None = None,
    oversized: Sequence[str] = (),
    mode: UploadMode | str = UploadMode.REPLACE,
    document: Document | None = None,
    password: str = "",
) -> UploadResult:
    """Store files and queue one job for what changed. A file whose name (or external
    id) a document has is a new version of it (``mode="new"``: a separate document
    instead), or unchanged when its content is the same; new content becomes a new
    document. The same content as another document is a duplicate, not stored twice.
    Empty, binary, unsupported and oversized files are rejected with a reason
    (``oversized`` names files the request stopped reading at the size limit).
    ``document``: the one file is a new version of that document, whatever its name.
    ``password``: opens the encrypted PDFs and Office files among them (stored decrypted)."""
    if not files and not oversized:
        raise ValidationError("no files were uploaded", {"field": "files"})
    try:
        mode = UploadMode(mode)
    except ValueError:
        raise ValidationError("mode is 'replace' or 'new'", {"field": "mode"}) from None
    batch_sizes_validate(store_batch_size, embed_batch_size)
    if enqueue:
        job_limits_check(user=user)
    max_bytes = settings.RAGSTUDIO_MAX_UPLOAD_BYTES
    result = UploadResult()
    for name in oversized:
        result.rejected.append(
            (clean_name(name), f"file too large: over {max_bytes:,} bytes (the limit)")
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValidationError(
            f"the password is longer than {MAX_PASSWORD_CHARS} characters", {"field": "password"}
        )
    staged: list[_Staged] = []
    opener = _Opener(password) if password else None
    try:
        staged = _stage(files, kb, result, opener)
        for attempt in range(1, PLACE_ATTEMPTS + 1):
            before = _copy(result)
            try:
                _place_staged(
                    kb,
                    staged,
                    result,
                    mode=mode,
                    user=user,
                    document=document,
                    enqueue=enqueue,
                    store_batch_size=store_batch_size,
                    embed_batch_size=embed_batch_size,
                )
                break
            except OperationalError as exc:
                # PostgreSQL checks foreign keys at commit; a swap or a job ending at the
                # same moment can lock the same rows the other way round, and the database
                # then aborts one of the two. Nothing of this attempt stayed: again.
                if attempt == PLACE_ATTEMPTS or not _is_lock_conflict(exc):
                    raise
                result = before
    finally:
        if opener is not None:
            opener.close()
        for item in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item.tmp)
    _audit_upload(kb, result, user, document)
    return result


def _audit_upload(
    kb: KnowledgeBase, result: UploadResult, user: Any, document: Document | None
) -> None:
    changed = [*result.accepted, *result.versions]
    if not changed and not result.rejected:
        return  # nothing stored: unchanged content and duplicates only
    names = [d.original_filename for d in changed][:AUDIT_NAMES]
    AuditEvent.record(
        AuditEvent.Action.DOCUMENT_REPLACE
        if document is not None
        else AuditEvent.Action.DOCUMENTS_UPLOAD,
        actor=user,
        kb=kb,
        target=(
            f"document {document.pk} {document.original_filename}"
            if document is not None
            else ", ".join(names) + (" ..." if len(changed) > len(names) else "")
        ),
        detail={
            "new": [d.pk for d in result.accepted][:AUDIT_NAMES],
            "versions": [[d.pk, d.version] for d in result.versions][:AUDIT_NAMES],
            "counts": {
                "new": len(result.accepted),
                "versions": len(result.versions),
                "unchanged": len(result.unchanged),
                "duplicates": len(result.duplicates),
                "rejected": len(result.rejected),
            },
            "job": result.job.pk if result.job is not None else None,
        },
    )
