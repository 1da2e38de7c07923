"""Sources a knowledge base keeps itself in sync with: creating them, and syncing them. A
sync lists the source, compares each item's fingerprint with the one recorded at the last
sync, reads only what changed and uploads it through the same path as any upload (new
files become documents, changed ones new versions, in one job), and deletes the documents
of files removed at the source (unless the source keeps them). Each item's failure is its
own; an unchanged source embeds and writes nothing."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ingestion.connectors import (
    SOURCE_KINDS,
    Connector,
    ConnectorError,
    Item,
    ItemError,
    Limits,
    connector_for,
)
from ingestion.models import IngestionJob, Source, SourceItem
from ingestion.services.documents import document_delete
from ingestion.services.uploads import IncomingFile, documents_upload
from knowledge_bases.models import AuditEvent, KnowledgeBase
from ragstudio.core.bounds import SOURCE_SCHEDULE_MINUTES, SOURCES_PER_KB
from ragstudio.core.errors import Conflict, RagStudioError, ValidationError
from ragstudio.core.types import DocumentError
from ragstudio.env import rag_settings

# A sync that claimed its source this long ago without finishing died with its worker.
STALE_CLAIM = timedelta(hours=2)
READ_FAILED = "cannot read it from the source: "


def source_limits() -> Limits:
    cfg = rag_settings()
    return Limits(
        max_bytes=settings.RAGSTUDIO_MAX_UPLOAD_BYTES,
        max_items=cfg["SOURCE_MAX_ITEMS"],
        timeout=cfg["FETCH_TIMEOUT_SECONDS"],
        folder_roots=tuple(cfg["SOURCE_FOLDER_ROOTS"]),
        fetch_allow=tuple(cfg["FETCH_ALLOW"]),
        work_dir=cfg["UPLOAD_DIR"].parent / "source-cache",
    )


def _connector(kind: str, config: Any) -> Connector:
    try:
        return connector_for(kind, config, source_limits())
    except ConnectorError as exc:
        raise ValidationError(f"source settings: {exc}", {"field": "config"}) from None


def _validated(name: str, kind: str, config: Any, schedule_minutes: int) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise ValidationError("a source's name is 1 to 100 characters", {"field": "name"})
    if kind not in SOURCE_KINDS:
        raise ValidationError(f"kind is one of {', '.join(SOURCE_KINDS)}", {"field": "kind"})
    if schedule_minutes not in SOURCE_SCHEDULE_MINUTES:
        raise ValidationError(
            SOURCE_SCHEDULE_MINUTES.describe() + " (0: only when asked)",
            {"field": "schedule_minutes"},
        )
    _connector(kind, config)
    return name


@transaction.atomic
def source_create(
    *,
    kb: KnowledgeBase,
    name: str,
    kind: str,
    config: dict[str, Any],
    schedule_minutes: int = 60,
    delete_missing: bool = True,
    user: Any = None,
) -> Source:
    """A new source (its settings checked: a folder under an allowed root, an address
    that is not private...); its first sync is due at once when it has a schedule."""
    KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
    name = _validated(name, kind, config, schedule_minutes)
    if Source.objects.filter(knowledge_base=kb).count() >= SOURCES_PER_KB.high:
        raise Conflict(f"a knowledge base has at most {SOURCES_PER_KB.high} sources")
    if Source.objects.filter(knowledge_base=kb, name=name).exists():
        raise Conflict(f"this knowledge base has a source named {name!r}", {"field": "name"})
    source = Source.objects.create(
        knowledge_base=kb,
        name=name,
        kind=kind,
        config=config,
        schedule_minutes=schedule_minutes,
        delete_missing=delete_missing,
        next_sync_at=timezone.now() if schedule_minutes else None,
        created_by=user if getattr(user, "pk", None) else None,
    )
    AuditEvent.record(
        AuditEvent.Action.SOURCE_ADD,
        actor=user,
        kb=kb,
        target=f"source {name}",
        detail={
            "kind": kind,
            "schedule_minutes": schedule_minutes,
            "delete_missing": delete_missing,
        },
    )
    return source


@transaction.atomic
def source_update(
    *,
    source: Source,
    schedule_minutes: int | None = None,
    delete_missing: bool | None = None,
    enabled: bool | None = None,
) -> Source:
    source = Source.objects.select_for_update().get(pk=source.pk)
    if schedule_minutes is not None:
        _validated(source.name, source.kind, source.config, schedule_minutes)
        source.schedule_minutes = schedule_minutes
        source.next_sync_at = timezone.now() if schedule_minutes else None
    if delete_missing is not None:
        source.delete_missing = delete_missing
    if enabled is not None:
        source.enabled = enabled
    source.save()
    return source


def source_delete(*, source: Source) -> None:
    """The source goes; its documents stay, as documents of the knowledge base."""
    AuditEvent.record(
        AuditEvent.Action.SOURCE_REMOVE,
        kb=source.knowledge_base,
        target=f"source {source.name}",
        detail={"kind": source.kind},
    )
    source.delete()


def source_sync_request(*, source: Source) -> Source:
    """Sync as soon as a worker is free (a django-q2 task, after the commit)."""
    from django_q.tasks import async_task

    source_id = source.pk
    transaction.on_commit(
        lambda: async_task(
            "ingestion.tasks.sync_source", source_id, task_name=f"source-sync-{source_id}"
        )
    )
    return source


def sources_due() -> list[int]:
    """Sources whose scheduled sync is due; each is pushed to its next slot at once, so
    a slow broker never gets the same sync twice."""
    now = timezone.now()
    due = list(
        Source.objects.filter(enabled=True, schedule_minutes__gt=0, next_sync_at__lte=now)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - STALE_CLAIM))
        .values_list("pk", "schedule_minutes")
    )
    for pk, minutes in due:
        Source.objects.filter(pk=pk).update(next_sync_at=now + timedelta(minutes=minutes))
    return [pk for pk, _ in due]


@dataclass
class SyncResult:
    source: Source
    seen: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    kept: int = 0  # removed at the source, kept here (the source keeps them)
    failed: list[dict[str, str]] = field(default_factory=list)
    job: IngestionJob | None = None
    seconds: float = 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "added": self.added,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "kept": self.kept,
            "failed": len(self.failed),
            "failures": self.failed[:50],
            "job": self.job.pk if self.job else None,
            "seconds": round(self.seconds, 2),
        }


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _external_id(source: Source, key: str) -> str:
    """A source item's document identity (keys past the field's size are hashed)."""
    full = f"source:{source.pk}:{key}"
    return full if len(full) <= 500 else f"source:{source.pk}:sha256:{_key_hash(key)}"


def _claim(source_id: int) -> Source | None:
    now = timezone.now()
    claimed = Source.objects.filter(pk=source_id).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - STALE_CLAIM)
    )
    if not claimed.update(claimed_at=now, status=Source.Status.RUNNING):
        return None
    return Source.objects.select_related("knowledge_base").get(pk=source_id)


def _lazy(connector: Connector, item: Item) -> Iterator[bytes]:
    """The item's bytes when the upload reads them (one file in memory at a time)."""
    try:
        fetched = connector.fetch(item, "")
    except ItemError as exc:
        raise DocumentError(READ_FAILED + str(exc)) from None
    if fetched is not None:
        yield fetched.data


def source_sync(*, source_id: int, user: Any = None, enqueue: bool = True) -> SyncResult | None:
    """Bring the knowledge base in line with the source; None when a sync of it is
    running already."""
    source = _claim(source_id)
    if source is None:
        return None
    started = time.monotonic()
    result = SyncResult(source)
    status, error = Source.Status.OK, ""
    try:
        _sync(source, result, user, enqueue)
    except (ConnectorError, RagStudioError) as exc:
        status, error = Source.Status.FAILED, str(getattr(exc, "message", exc))
    except Exception as exc:  # reported on the source, not lost in a worker's log
        status, error = Source.Status.FAILED, f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result.seconds = time.monotonic() - started
        now = timezone.now()
        Source.objects.filter(pk=source.pk).update(
            claimed_at=None,
            status=status,
            last_error=error[:4000],
            last_sync_at=now,
            last_stats=result.stats(),
            next_sync_at=now + timedelta(minutes=source.schedule_minutes)
            if source.schedule_minutes
            else None,
        )
    return result


def _sync(source: Source, result: SyncResult, user: Any, enqueue: bool) -> None:
    kb = source.knowledge_base
    connector = connector_for(source.kind, source.config, source_limits())
    known = {row.key_hash: row for row in SourceItem.objects.filter(source=source)}
    now = timezone.now()
    files: list[IncomingFile] = []
    pending: list[tuple[Item, str, SourceItem | None]] = []  # item, fingerprint, known row
    listed: set[str] = set()
    for item in connector.items():
        result.seen += 1
        key_hash = _key_hash(item.key)
        listed.add(key_hash)
        row = known.get(key_hash)
        recorded = row.fingerprint if row is not None else ""
        if row is not None and item.fingerprint and item.fingerprint == recorded:
            result.unchanged += 1
            continue
        if item.fingerprint:  # known to have changed: read when the upload reads it
            chunks: Any = _lazy(connector, item)
            fingerprint = item.fingerprint
        else:  # only a (conditional) read can tell
            try:
                fetched = connector.fetch(item, recorded)
            except ItemError as exc:
                _fail(source, result, item, key_hash, row, str(exc), now)
                continue
            if fetched is None:
                result.unchanged += 1
                continue
            chunks, fingerprint = [fetched.data], fetched.fingerprint
        files.append(
            IncomingFile(name=item.name, chunks=chunks, external_id=_external_id(source, item.key))
        )
        pending.append((item, fingerprint, row))
    SourceItem.objects.filter(source=source, key_hash__in=listed).update(seen_at=now)
    _remove_missing(source, result, [row for h, row in known.items() if h not in listed])
    if files:
        upload = documents_upload(kb=kb, files=files, user=user, enqueue=enqueue)
        result.job = upload.job
        for index, (item, fingerprint, row) in enumerate(pending):
            verdict, document, reason = upload.verdicts.get(index, ("rejected", None, "not read"))
            if verdict == "accepted":
                result.added += 1
            elif verdict == "version":
                result.changed += 1
            elif verdict == "unchanged":
                result.unchanged += 1
            if verdict in ("accepted", "version", "unchanged"):
                _record(source, item, fingerprint, document, "", now)
            else:  # rejected or a duplicate: not read again until it changes (a failed
                # read is tried again)
                kept = "" if reason.startswith(READ_FAILED) else fingerprint
                _fail(source, result, item, _key_hash(item.key), row, reason, now, kept)


def _record(
    source: Source, item: Item, fingerprint: str, document: Any, error: str, now: Any
) -> None:
    SourceItem.objects.update_or_create(
        source=source,
        key_hash=_key_hash(item.key),
        defaults={
            "key": item.key[:2000],
            "fingerprint": fingerprint[:300],
            "document": document,
            "error": error[:2000],
            "seen_at": now,
        },
    )


def _fail(
    source: Source,
    result: SyncResult,
    item: Item,
    key_hash: str,
    row: SourceItem | None,
    reason: str,
    now: Any,
    fingerprint: str = "",
) -> None:
    """An item that failed: said in the result and on its row; a read that failed keeps
    no fingerprint, so the next sync tries again."""
    result.failed.append({"item": item.key[:300], "reason": reason[:300]})
    _record(source, item, fingerprint, row.document if row is not None else None, reason, now)


def _remove_missing(source: Source, result: SyncResult, gone: list[SourceItem]) -> None:
    """Items no longer at the source: their documents are deleted (or kept, per the
    source), then their rows. A delete refused now (a job is running) is tried again at
    the next sync."""
    for row in gone:
        if row.document_id is not None and source.delete_missing:
            try:
                document_delete(kb=source.knowledge_base, document_id=row.document_id)
            except Conflict as exc:
                result.failed.append(
                    {"item": row.key[:300], "reason": f"not removed yet: {exc.message}"}
                )
                continue
            except RagStudioError:
                pass  # deleted here already
            result.removed += 1
        elif row.document_id is not None:
            result.kept += 1
        row.delete()
