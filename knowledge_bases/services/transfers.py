"""Exports and imports as background work (the API and the pages): a ``Transfer`` row is
queued, a worker runs it with its progress, an export's archive is downloaded when done
and deleted after RAGSTUDIO_EXPORT_RETENTION_HOURS; an import's archive is deleted once
read."""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from ingestion.services.queue import ingestion_job_create
from ingestion.services.uploads import store_stream
from knowledge_bases.generations import storage_options
from knowledge_bases.models import Document, KnowledgeBase, Transfer
from knowledge_bases.services.knowledge_bases import SLUG, SLUG_RULE
from knowledge_bases.services.transfer import SUFFIX, kb_export, kb_import, transfers_dir
from ragstudio.core.errors import Conflict, NotFound, RagStudioError, ValidationError
from ragstudio.core.types import DocumentError
from ragstudio.env import rag_settings
from search.stores.objects import ObjectStore

log = logging.getLogger(__name__)
T = Transfer.Status
PROGRESS_EVERY = 0.5  # seconds between progress writes


def _shared() -> ObjectStore | None:
    """Where every host finds an archive, in a scaled-out installation (a worker writes
    an export that a web process serves, and reads an upload another one took)."""
    root = rag_settings()["STORAGE_URI"]
    return ObjectStore(f"{root}/transfers", storage_options()) if root else None


def _share(name: str) -> None:
    store = _shared()
    if store is not None:
        store.put_file(name, transfers_dir() / name)


def _local(name: str) -> Path:
    """An archive on this host (fetched from the object store into the cache if need be)."""
    path = transfers_dir() / name
    store = _shared()
    if not path.is_file() and store is not None:
        store.get_file(name, path)
    return path


def _forget(name: str) -> None:
    (transfers_dir() / name).unlink(missing_ok=True)
    store = _shared()
    if store is not None:
        store.delete(name)


def _enqueue(transfer_id: int) -> None:
    from django_q.tasks import async_task

    transaction.on_commit(
        lambda: async_task(
            "knowledge_bases.tasks.run_transfer",
            transfer_id,
            task_name=f"transfer-{transfer_id}",
            group="transfers",
        )
    )


def transfer_export_request(
    *, kb: KnowledgeBase, user: Any, all_generations: bool = False, enqueue: bool = True
) -> Transfer:
    """Queue an export of ``kb`` (one at a time per KB: 409 while one is queued or runs)."""
    with transaction.atomic():
        KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
        if Transfer.objects.filter(
            kind=Transfer.Kind.EXPORT, knowledge_base=kb, status__in=Transfer.LIVE
        ).exists():
            raise Conflict(f"an export of {kb.slug!r} is already under way")
        transfer = Transfer.objects.create(
            kind=Transfer.Kind.EXPORT,
            knowledge_base=kb,
            kb_slug=kb.slug,
            options={"all_generations": bool(all_generations)},
            created_by=user if getattr(user, "pk", None) else None,
        )
        if enqueue:
            _enqueue(transfer.pk)
    return transfer


def transfer_import_request(
    *,
    chunks: Iterable[bytes],
    user: Any,
    slug: str | None = None,
    documents_only: bool = False,
    enqueue: bool = True,
) -> Transfer:
    """Store an uploaded archive and queue its import as a KB owned by ``user``."""
    slug = (slug or "").strip().lower()
    if slug and not SLUG.match(slug):
        raise ValidationError(f"slug must be {SLUG_RULE}", {"field": "slug"})
    try:
        path, _sha, size = store_stream(chunks, transfers_dir(), rag_settings()["IMPORT_MAX_BYTES"])
    except DocumentError as exc:
        raise ValidationError(str(exc), {"field": "file"}) from None
    if not zipfile.is_zipfile(path):
        path.unlink(missing_ok=True)
        raise ValidationError(
            "not a knowledge-base archive (a .ragkb file made by an export)", {"field": "file"}
        )
    archive = path.with_name(f"import-{path.name.lstrip('.')}{SUFFIX}")
    path.replace(archive)
    _share(archive.name)
    transfer = Transfer.objects.create(
        kind=Transfer.Kind.IMPORT,
        kb_slug=slug,
        options={"slug": slug, "documents_only": bool(documents_only)},
        archive=archive.name,
        size=size,
        created_by=user if getattr(user, "pk", None) else None,
    )
    if enqueue:
        _enqueue(transfer.pk)
    return transfer


class _Progress:
    """Writes a transfer's stage and counts at most every PROGRESS_EVERY seconds."""

    def __init__(self, transfer: Transfer) -> None:
        self.transfer = transfer
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY and done < total:
            return
        self.last = now
        Transfer.objects.filter(pk=self.transfer.pk).update(
            stage=stage[:100], done=max(0, done), total=max(0, total)
        )


def transfer_run(transfer_id: int) -> str:
    """Run a queued transfer (a second delivery finds it taken and does nothing); its
    final status."""
    claimed = Transfer.objects.filter(pk=transfer_id, status=T.QUEUED).update(
        status=T.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return "taken"
    transfer = Transfer.objects.select_related("knowledge_base", "created_by").get(pk=transfer_id)
    progress = _Progress(transfer)
    try:
        if transfer.kind == Transfer.Kind.EXPORT:
            fields = _run_export(transfer, progress)
        else:
            fields = _run_import(transfer, progress)
        status, error = T.SUCCEEDED, ""
    except RagStudioError as exc:
        fields, status, error = {}, T.FAILED, exc.message
    except Exception as exc:
        log.exception("transfer %s failed", transfer_id)
        fields, status, error = {}, T.FAILED, f"internal error: {type(exc).__name__}: {exc}"
    finally:
        if transfer.kind == Transfer.Kind.IMPORT and transfer.archive:
            _forget(transfer.archive)
    Transfer.objects.filter(pk=transfer_id).update(
        status=status, error_message=error[:5000], finished_at=timezone.now(), **fields
    )
    return str(status)


def _run_export(transfer: Transfer, progress: _Progress) -> dict[str, Any]:
    kb = transfer.knowledge_base
    if kb is None:
        raise NotFound("the knowledge base was deleted before its export ran")
    name = f"{kb.slug}-{timezone.now():%Y%m%d-%H%M%S}-{transfer.pk}{SUFFIX}"
    summary = kb_export(
        kb,
        transfers_dir() / name,
        all_generations=bool(transfer.options.get("all_generations")),
        actor=transfer.created_by,
        progress=progress,
    )
    _share(name)
    return {
        "archive": name,
        "size": summary.bytes,
        "stage": "done",
        "result": {
            "documents": summary.documents,
            "versions": summary.versions,
            "generations": summary.generations,
            "chunks": summary.chunks,
        },
    }


def _run_import(transfer: Transfer, progress: _Progress) -> dict[str, Any]:
    result = kb_import(
        _local(transfer.archive),
        owner=transfer.created_by,
        slug=transfer.options.get("slug") or None,
        documents_only=bool(transfer.options.get("documents_only")),
        actor=transfer.created_by,
        progress=progress,
    )
    job_id = None
    if result.pending:
        job = ingestion_job_create(
            kb=result.kb,
            documents=list(Document.objects.filter(pk__in=result.pending)),
            user=transfer.created_by,
        )
        job_id = job.pk
    return {
        "knowledge_base": result.kb,
        "kb_slug": result.kb.slug,
        "archive": "",
        "stage": "done",
        "result": {
            "documents": result.documents,
            "generations": result.generations,
            "chunks": result.chunks,
            "embedded": 0,
            "to_index": len(result.pending),
            "job": job_id,
        },
    }


def transfers_of(user: Any) -> QuerySet[Transfer]:
    """The transfers ``user`` started (staff: everyone's)."""
    rows = Transfer.objects.select_related("knowledge_base", "created_by")
    if getattr(user, "is_staff", False):
        return rows
    return rows.filter(created_by=user) if getattr(user, "pk", None) else rows.none()


def transfer_get(*, pk: int, user: Any) -> Transfer:
    transfer = transfers_of(user).filter(pk=pk).first()
    if transfer is None:
        raise NotFound(f"no transfer {pk}")
    return transfer


def transfer_archive(transfer: Transfer) -> Path:
    """The archive of a finished export (NotFound before, or once it was deleted)."""
    if transfer.kind != Transfer.Kind.EXPORT or transfer.status != T.SUCCEEDED:
        raise Conflict(f"transfer {transfer.pk} has no archive to download ({transfer.status})")
    path = _local(transfer.archive) if transfer.archive else None
    if path is None or not path.is_file():
        raise NotFound(f"the archive of transfer {transfer.pk} was deleted: export again")
    return path


def transfers_prune(now: Any = None) -> int:
    """Delete export archives past their retention, and import uploads a crash left; a
    transfer whose worker stopped (running past the task timeout, or never taken) fails."""
    now = now or timezone.now()
    stale = Transfer.objects.filter(
        Q(status=T.RUNNING, started_at__lt=now - timedelta(seconds=settings.Q_CLUSTER["timeout"]))
        | Q(status=T.QUEUED, created_at__lt=now - timedelta(days=1))
    )
    stale.update(
        status=T.FAILED,
        finished_at=now,
        error_message="the worker stopped before it finished: start it again",
    )
    hours = settings.EXPORT_RETENTION_HOURS
    removed = 0
    old = Transfer.objects.filter(
        kind=Transfer.Kind.EXPORT, status=T.SUCCEEDED, finished_at__lt=now - timedelta(hours=hours)
    ).exclude(archive="")
    for transfer in old:
        _forget(transfer.archive)
        removed += 1
    old.update(archive="")
    live = set(Transfer.objects.exclude(archive="").values_list("archive", flat=True))
    cutoff = time.time() - 24 * 3600
    for path in transfers_dir().iterdir():
        if path.name not in live and path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
