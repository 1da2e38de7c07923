"""A consistent copy of a whole installation, and bringing it back (``manage.py backup
DIR`` / ``manage.py restore DIR``), while the app runs.

The database is read in one transaction (a snapshot: on PostgreSQL a repeatable-read one,
on SQLite a read transaction of its write-ahead log) and written as Django fixtures, so a
backup restores into SQLite or PostgreSQL alike. Then the files the snapshot refers to:
the uploads, and each kept generation's LanceDB table and tantivy indexes. A job may
write meanwhile; what it wrote after the snapshot is taken out again on restore (rows of
documents, or document versions, the snapshot does not know), and rows of versions a job
had not finished are hidden by the snapshot's own version masks until the job, which the
snapshot shows running, is taken over and retried. Every file is listed in the manifest
with its checksum; a damaged or incomplete backup is refused before anything is
restored. An installation whose files live in an object store backs up its database
only: the store needs bucket versioning (docs/deploy.md)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tantivy
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction

from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_store, upload_local_path
from knowledge_bases.models import Document, DocumentVersion, Generation, KnowledgeBase
from ragstudio.core.files import app_version, file_sha256
from ragstudio.env import rag_settings

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "database.json"
# Kept out of the fixtures: django-q2's queue and results (the reaper gives queued jobs
# a task again), sessions, login throttling, and what migrations create themselves.
EXCLUDED = [
    "contenttypes",
    "auth.permission",
    "sessions",
    "admin.logentry",
    "django_q",
    "axes",
]
KEPT = (Generation.Status.ACTIVE, Generation.Status.ARCHIVED, Generation.Status.READY)
COPY_ATTEMPTS = 3


class BackupError(Exception):
    pass


@dataclass
class Summary:
    files: int = 0
    bytes: int = 0
    generations: int = 0
    documents: int = 0


def backup(target: Path, *, say: Callable[[str], None] = lambda _m: None) -> Summary:
    """Write a backup into ``target`` (a new or empty directory)."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: back up into a new directory")
    target.mkdir(parents=True, exist_ok=True)
    cfg = rag_settings()
    remote = bool(cfg["STORAGE_URI"])
    outer = connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql" and not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        out = io.StringIO()
        call_command(
            "dumpdata",
            natural_foreign=True,
            exclude=EXCLUDED,
            format="json",
            stdout=out,
        )
        (target / DATABASE).write_text(out.getvalue(), encoding="utf-8")
        paths = sorted(
            set(DocumentVersion.objects.values_list("storage_path", flat=True))
            | set(Document.objects.values_list("storage_path", flat=True))
        )
        kept = list(Generation.objects.filter(status__in=KEPT).select_related("knowledge_base"))
        documents = Document.objects.count()
    say(f"database: {documents} documents, {len(kept)} generations kept")
    generations = []
    if not remote:
        for path in paths:
            source = upload_local_path(path)
            if source.exists():
                _copy_file(source, target / "uploads" / path)
        for generation in kept:
            generations.append(_copy_generation(generation, target))
            say(f"generation #{generation.number} of {generation.knowledge_base.slug} copied")
    files = {}
    total = 0
    for written in sorted(p for p in target.rglob("*") if p.is_file()):
        files[written.relative_to(target).as_posix()] = file_sha256(written)
        total += written.stat().st_size
    manifest = {
        "format": FORMAT,
        "app_version": app_version(Path(settings.BASE_DIR)),
        "created_at": datetime.now(UTC).isoformat(),
        "database_vendor": connection.vendor,
        "storage": "object store" if remote else "local",
        "generations": generations,
        "files": files,
    }
    # Written last: a backup without its manifest is one that did not finish.
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Summary(files=len(files), bytes=total, generations=len(generations), documents=documents)


def _copy_file(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)


def _copy_generation(generation: Generation, target: Path) -> dict[str, Any]:
    """The generation's table at its version now, and its tantivy indexes, copied until a
    copy opens whole (a merge finishing during a copy can remove a segment it listed)."""
    store = generation_store(generation)
    table = store.vectors.table()
    lance_version = int(table.version) if table is not None else None
    lance_dir = Path(rag_settings()["LANCEDB_URI"]) / f"{generation.table_name}.lance"
    bm25_dir = Path(store.bm25.path)
    rel_bm25 = bm25_dir.relative_to(Path(rag_settings()["BM25_DIR"]))
    for attempt in range(1, COPY_ATTEMPTS + 1):
        destination = target / "bm25" / rel_bm25
        shutil.rmtree(destination, ignore_errors=True)
        if bm25_dir.exists():
            shutil.copytree(bm25_dir, destination)
        if _tantivy_opens(destination):
            break
        if attempt == COPY_ATTEMPTS:
            raise BackupError(f"the BM25 index of generation {generation.pk} kept changing")
    if lance_dir.exists():
        shutil.copytree(lance_dir, target / "lancedb" / lance_dir.name)
    return {
        "kb": generation.knowledge_base_id,
        "number": generation.number,
        "table": generation.table_name,
        "lance_version": lance_version,
        "bm25": rel_bm25.as_posix(),
    }


def _tantivy_opens(path: Path) -> bool:
    for index_dir in (path, path / "passages"):
        if not (index_dir / "meta.json").exists():
            continue
        try:
            tantivy.Index.open(str(index_dir)).searcher()
        except Exception:  # a segment listed in meta.json and missing from the copy
            return False
    return True


def verify(source: Path) -> dict[str, Any]:
    """The manifest of a complete, undamaged backup (BackupError saying what is wrong)."""
    manifest_path = Path(source) / MANIFEST
    if not manifest_path.exists():
        raise BackupError(f"{source} has no {MANIFEST}: not a backup, or one that did not finish")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BackupError(f"{MANIFEST} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r}; this release reads {FORMAT}")
    files = manifest.get("files") or {}
    if DATABASE not in files:
        raise BackupError(f"the backup lists no {DATABASE}")
    for rel, digest in files.items():
        path = Path(source) / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise BackupError(f"the manifest names a path outside the backup: {rel!r}")
        if not path.is_file():
            raise BackupError(f"{rel} is missing from the backup")
        if file_sha256(path) != digest:
            raise BackupError(f"{rel} does not match its checksum: the backup is damaged")
    return manifest


def restore(source: Path, *, say: Callable[[str], None] = lambda _m: None) -> Summary:
    """Bring a backup back into this installation, whose database must hold no users and
    no knowledge bases yet (a new data directory, migrated)."""
    source = Path(source)
    manifest = verify(source)
    call_command("migrate", verbosity=0)
    if KnowledgeBase.objects.exists() or get_user_model().objects.exists():
        raise BackupError(
            "this installation already has users or knowledge bases: restore into a new "
            "data directory (and database)"
        )
    cfg = rag_settings()
    with transaction.atomic():
        call_command("loaddata", str(source / DATABASE), verbosity=0)
    say("database restored")
    copied = 0
    if manifest.get("storage") == "local":
        destinations = {
            "uploads": Path(cfg["UPLOAD_DIR"]),
            "lancedb": Path(cfg["LANCEDB_URI"]),
            "bm25": Path(cfg["BM25_DIR"]),
        }
        for rel in manifest["files"]:
            head, _, rest = rel.partition("/")
            if head in destinations and rest:
                _copy_file(source / rel, destinations[head] / rest)
                copied += 1
        for entry in manifest["generations"]:
            _settle(entry)
            say(f"generation #{entry['number']} restored")
    return Summary(
        files=copied,
        generations=len(manifest["generations"]),
        documents=Document.objects.count(),
    )


def _settle(entry: dict[str, Any]) -> None:
    """The generation's table back at the version of the snapshot, and the rows written
    after it taken out of both stores: documents, or versions of documents, that the
    restored database does not know."""
    generation = Generation.objects.get(knowledge_base_id=entry["kb"], number=entry["number"])
    store = generation_store(generation)
    table = store.vectors.table()
    wanted = entry.get("lance_version")
    if table is not None and wanted is not None and int(table.version) != wanted:
        table.checkout(wanted)
        table.restore()
    latest = dict(
        Document.objects.filter(knowledge_base_id=entry["kb"]).values_list("pk", "version")
    )
    columns = ["document_id", "version"] if store.vectors.supports_versions() else ["document_id"]
    seen = {
        (int(r["document_id"]), int(r.get("version") or 1))
        for r in store.vectors.rows(columns=columns)
    }
    # A job the snapshot shows queued or running writes its documents' versions again
    # when it is retried: what it wrote after the snapshot goes.
    live = IngestionJob.objects.filter(generation=generation, status__in=IngestionJob.LIVE)
    unfinished = {
        (document.pk, document.version)
        for job in live.prefetch_related("documents")
        for document in job.documents.all()
    }
    unknown_documents = sorted({d for d, _v in seen if d not in latest})
    if unknown_documents:
        store.delete_documents(unknown_documents)
    newer = sorted(
        (d, v) for d, v in seen if d in latest and (v > latest[d] or (d, v) in unfinished)
    )
    if newer:
        store.delete_versions(newer)


def environment_note() -> str:
    """What a backup of this installation leaves to the operator, if anything."""
    if rag_settings()["STORAGE_URI"]:
        return (
            "the uploads and indexes live in the object store and are not copied: keep "
            "bucket versioning on (docs/deploy.md)"
        )
    return ""


__all__ = ["BackupError", "backup", "environment_note", "restore", "verify"]
