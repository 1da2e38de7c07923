"""A knowledge base taken out of one installation and brought into another, in one
archive: ``kb_export`` writes it, ``archive_verify`` checks it, ``kb_import`` reads it.

The archive is a zip file:

- ``manifest.json``: the format, the app's version, the KB's model and each generation's
  model fingerprint, the counts, and every other member's SHA-256 and size;
- ``knowledge_base.json``: the KB's settings, its documents and all their versions, the
  exported generations (settings, reports, events), evaluation sets and their runs;
- ``uploads/<sha256>``: each version's original file, once per content;
- ``generations/<number>/chunks.parquet``: the generation's rows as LanceDB holds them
  (vectors included), and ``passages.parquet``: its BM25 passages (text and chunks).

Document ids differ between installations, and a chunk's id is derived from its
document's (``ragstudio.core.types.chunk_id``): an import derives each row's ids again
from the new document ids, then writes the rows through the same path a build writes
them (LanceDB, then tantivy), so its BM25 indexes are built from the exported chunks and
passages and nothing is embedded. An archive whose model fingerprint differs from the
model this installation has under the same name is refused, or imported as documents
to index again (``documents_only``).

Only what a search of a generation can see is exported: versions a job is still writing
(masked) and rows of documents deleted since are left out, so an export taken while a
job runs is consistent; the documents that job was indexing are imported as pending and
indexed again there."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction

from ingestion.services.uploads import storage_quota
from knowledge_bases.generations import (
    build_settings_resolve,
    document_file_forget,
    document_file_share,
    document_read,
    embedder_get,
    embedder_permitted,
    generation_imported,
    generation_store,
    table_name,
    upload_local_path,
    upload_storage_path,
)
from knowledge_bases.models import (
    AuditEvent,
    Document,
    DocumentVersion,
    Generation,
    GenerationEvent,
    KnowledgeBase,
    VersionMask,
)
from knowledge_bases.services.knowledge_bases import SLUG, SLUG_RULE, _quota_knowledge_bases
from ragstudio.core.errors import Conflict, Forbidden, ValidationError
from ragstudio.core.files import app_version, file_sha256
from ragstudio.core.types import Chunk, EmbeddedChunk, chunk_id, content_hash, parent_id
from ragstudio.env import rag_settings
from search.models import EvaluationQuery, EvaluationRun, EvaluationSet, Judgement

FORMAT = 1
MANIFEST = "manifest.json"
CONTENT = "knowledge_base.json"
SUFFIX = ".ragkb"
KEPT = (Generation.Status.ACTIVE, Generation.Status.ARCHIVED, Generation.Status.READY)
WRITE_BATCH = 4000
CHUNK_COLUMNS = {
    "id": pa.string(),
    "document_id": pa.int64(),
    "ordinal": pa.int32(),
    "content_hash": pa.string(),
    "text": pa.string(),
    "title": pa.string(),
    "record_id": pa.string(),
    "page": pa.int32(),
    "token_count": pa.int32(),
    "metadata": pa.string(),
    "parent": pa.string(),
    "version": pa.int32(),
}
Progress = Callable[[str, int, int], None]


class TransferError(ValidationError):
    """An archive that cannot be imported, and why."""


def _quiet(_stage: str, _done: int, _total: int) -> None:
    pass


# --- model rows as JSON ----------------------------------------------------------------


def _fields(obj: models.Model, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The row's own values (no keys, no relations), JSON-ready."""
    return {
        f.name: f.value_from_object(obj)
        for f in obj._meta.concrete_fields
        if not (f.primary_key or f.is_relation or f.name in exclude)
    }


def _build(
    model: type[models.Model], values: Any, exclude: Sequence[str] = (), **extra: Any
) -> Any:
    """An unsaved row from exported values, each checked by its field (unknown names, from
    a later release, are left out)."""
    if not isinstance(values, dict):
        raise TransferError(f"a {model.__name__} in the archive is not an object")
    obj = model(**extra)
    fields = {
        f.name: f
        for f in model._meta.concrete_fields
        if not (f.primary_key or f.is_relation or f.name in exclude)
    }
    for name, value in values.items():
        f = fields.get(name)
        if f is None:
            continue
        try:
            setattr(obj, f.attname, f.to_python(value))
        except DjangoValidationError as exc:
            raise TransferError(f"{model.__name__}.{name}: {'; '.join(exc.messages)}") from None
    try:
        obj.clean_fields(
            exclude=[
                *exclude,
                *(f.name for f in model._meta.concrete_fields if f.is_relation),
            ]
        )
    except DjangoValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        raise TransferError(f"a {model.__name__} in the archive is invalid: {problems}") from None
    return obj


def _username(user: Any) -> str:
    return user.get_username() if user is not None else ""


# --- export ----------------------------------------------------------------------------


@dataclass
class ExportSummary:
    path: Path
    bytes: int
    documents: int
    versions: int
    generations: list[int]
    chunks: int


def _generations_to_export(kb: KnowledgeBase, all_generations: bool) -> list[Generation]:
    if all_generations:
        return list(kb.generations.filter(status__in=KEPT).order_by("number"))
    if kb.active_generation_id is None:
        return []
    return [Generation.objects.get(pk=kb.active_generation_id)]


def _snapshot(kb: KnowledgeBase, all_generations: bool) -> dict[str, Any]:
    """The database's side of the KB, read in one transaction."""
    with transaction.atomic():
        kb = KnowledgeBase.objects.select_related("owner").get(pk=kb.pk)
        documents = list(
            Document.objects.filter(knowledge_base=kb).select_related("uploaded_by").order_by("pk")
        )
        versions = list(
            DocumentVersion.objects.filter(document__knowledge_base=kb)
            .select_related("uploaded_by")
            .order_by("document_id", "number")
        )
        generations = _generations_to_export(kb, all_generations)
        masks = {
            g.pk: {
                (int(d), int(v))
                for d, v in VersionMask.objects.filter(generation=g).values_list(
                    "document_id", "version"
                )
            }
            for g in generations
        }
        events = list(
            GenerationEvent.objects.filter(generation__in=generations)
            .select_related("actor")
            .order_by("pk")
        )
        sets = list(EvaluationSet.objects.filter(knowledge_base=kb).order_by("pk"))
        queries = list(EvaluationQuery.objects.filter(evaluation_set__in=sets).order_by("pk"))
        judgements = list(
            Judgement.objects.filter(query__in=queries).select_related("created_by").order_by("pk")
        )
        runs = list(
            EvaluationRun.objects.filter(
                evaluation_set__in=sets,
                generation__in=generations,
                status=EvaluationRun.Status.SUCCEEDED,
            )
            .select_related("created_by")
            .order_by("pk")
        )
    groups: dict[tuple[int, str], dict[Any, list[Any]]] = {}

    def by(rows: list[Any], key: str) -> dict[Any, list[Any]]:
        """``rows`` by the value of ``key`` (grouped once per list)."""
        grouped = groups.get((id(rows), key))
        if grouped is None:
            grouped = defaultdict(list)
            for row in rows:
                grouped[getattr(row, key)].append(row)
            groups[(id(rows), key)] = grouped
        return grouped

    gen_numbers = {g.pk: g.number for g in generations}
    active = kb.active_generation_id
    rollback = [gen_numbers[pk] for pk in kb.rollback_stack if pk in gen_numbers]
    return {
        "kb": kb,
        "generations": generations,
        "masks": masks,
        "versions": versions,
        "content": {
            "knowledge_base": {
                **_fields(kb, exclude=["rollback_stack"]),
                "owner": _username(kb.owner),
                "active_generation": gen_numbers.get(active) if active else None,
                "rollback_stack": rollback,
            },
            "documents": [
                {
                    "id": doc.pk,
                    "fields": _fields(doc, exclude=["storage_path"]),
                    "uploaded_by": _username(doc.uploaded_by),
                    "versions": [
                        {
                            "fields": _fields(v, exclude=["storage_path"]),
                            "uploaded_by": _username(v.uploaded_by),
                        }
                        for v in by(versions, "document_id")[doc.pk]
                    ],
                }
                for doc in documents
            ],
            "generations": [
                {
                    "fields": _fields(g, exclude=["table_name", "bm25_version", "status"]),
                    "status": g.status,
                    "events": [
                        {"fields": _fields(e), "actor": _username(e.actor)}
                        for e in by(events, "generation_id")[g.pk]
                    ],
                }
                for g in generations
            ],
            "evaluation_sets": [
                {
                    "fields": _fields(s),
                    "queries": [
                        {
                            "id": q.pk,
                            "fields": _fields(q),
                            "judgements": [
                                {
                                    "document": j.document_id,
                                    "fields": _fields(j),
                                    "created_by": _username(j.created_by),
                                }
                                for j in by(judgements, "query_id")[q.pk]
                            ],
                        }
                        for q in by(queries, "evaluation_set_id")[s.pk]
                    ],
                    "runs": [
                        {
                            "generation": gen_numbers[r.generation_id],
                            "fields": _fields(r),
                            "created_by": _username(r.created_by),
                        }
                        for r in by(runs, "evaluation_set_id")[s.pk]
                    ],
                }
                for s in sets
            ],
        },
    }


def _visible_rows(generation: Generation, known: set[tuple[int, int]], masked: set) -> pa.Table:
    """The generation's rows a search of it can see: versions the database knows (rows a
    job wrote after the snapshot, or of documents deleted since, are left out), unmasked."""
    table = generation_store(generation).vectors.table()
    if table is None:  # nothing was ever written (every document failed)
        return pa.table(
            {
                **{k: pa.array([], t) for k, t in CHUNK_COLUMNS.items()},
                "vector": pa.array([], pa.list_(pa.float32(), generation.dimensions)),
            }
        )
    data = table.to_arrow()
    if "version" not in data.column_names:
        data = data.append_column("version", pa.array([1] * data.num_rows, pa.int32()))
    versions = [v if v is not None else 1 for v in data.column("version").to_pylist()]
    documents = data.column("document_id").to_pylist()
    keep = [
        (d, v) in known and (d, v) not in masked for d, v in zip(documents, versions, strict=True)
    ]
    data = data.filter(pa.array(keep, pa.bool_()))
    columns = [c for c in CHUNK_COLUMNS if c in data.column_names]
    return data.select([*columns, "vector"])


def _passages(generation: Generation, ids: set[str]) -> pa.Table:
    """The generation's passages that the exported rows belong to. An index of an older
    release did not store a passage's text: it is joined from its chunks then."""
    bm25 = generation_store(generation).bm25
    stored = bm25.passages.stored() if bm25.has_passages() else {}
    rows = [(pid, text, chunks) for pid, (text, chunks) in stored.items() if pid in ids]
    return pa.table(
        {
            "id": pa.array([r[0] for r in rows], pa.string()),
            "text": pa.array([r[1] for r in rows], pa.string()),
            "chunks": pa.array([r[2] for r in rows], pa.list_(pa.string())),
        }
    )


def kb_export(
    kb: KnowledgeBase,
    target: Path,
    *,
    all_generations: bool = False,
    actor: Any = None,
    progress: Progress = _quiet,
) -> ExportSummary:
    """Write the KB into the archive ``target`` (replaced only once complete)."""
    target = Path(target)
    snap = _snapshot(kb, all_generations)
    content = snap["content"]
    versions: list[DocumentVersion] = snap["versions"]
    known = {(v.document_id, v.number) for v in versions}
    generations: list[Generation] = snap["generations"]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    files: dict[str, dict[str, Any]] = {}
    chunk_total = 0
    fingerprints: dict[str, str] = {}
    try:
        with (
            zipfile.ZipFile(tmp, "w", allowZip64=True) as archive,
            tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as work,
        ):

            def add(name: str, path: Path, compress: bool) -> None:
                archive.write(path, name, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
                files[name] = {"sha256": file_sha256(path), "size": path.stat().st_size}

            contents = sorted({v.sha256 for v in versions})
            paths = {v.sha256: v.storage_path for v in versions}
            for done, sha in enumerate(contents, 1):
                local = Path(work) / "upload"
                try:
                    local.write_bytes(document_read(paths[sha]))
                except FileNotFoundError:
                    continue  # a file lost here: its versions import without it
                add(f"uploads/{sha}", local, compress=True)
                if done % 50 == 0 or done == len(contents):
                    progress("files", done, len(contents))
            for number, generation in enumerate(generations, 1):
                progress(f"generation #{generation.number}", number - 1, len(generations))
                rows = _visible_rows(generation, known, snap["masks"][generation.pk])
                chunks_path = Path(work) / "chunks.parquet"
                pq.write_table(rows, chunks_path, compression="zstd")
                add(f"generations/{generation.number}/chunks.parquet", chunks_path, False)
                parents = (
                    {p for p in rows.column("parent").to_pylist() if p} if rows.num_rows else set()
                )
                passages_path = Path(work) / "passages.parquet"
                pq.write_table(_passages(generation, parents), passages_path, compression="zstd")
                add(f"generations/{generation.number}/passages.parquet", passages_path, False)
                chunk_total += rows.num_rows
                fingerprints[str(generation.number)] = generation.embedder_fingerprint
            body = Path(work) / CONTENT
            body.write_text(json.dumps(content, cls=DjangoJSONEncoder), encoding="utf-8")
            add(CONTENT, body, compress=True)
            kb_row = snap["kb"]
            manifest = {
                "format": FORMAT,
                "app_version": app_version(Path(settings.BASE_DIR)),
                "created_at": datetime.now(UTC).isoformat(),
                "knowledge_base": kb_row.slug,
                "embedder": kb_row.embedder,
                "dimensions": kb_row.embedding_dimensions,
                "fingerprints": fingerprints,
                "documents": len(content["documents"]),
                "versions": len(versions),
                "chunks": chunk_total,
                "files": files,
            }
            archive.writestr(MANIFEST, json.dumps(manifest, indent=1), zipfile.ZIP_DEFLATED)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    AuditEvent.record(
        AuditEvent.Action.KB_EXPORT,
        actor=actor,
        kb=snap["kb"],
        target=f"knowledge base {snap['kb'].slug}",
        detail={
            "generations": [g.number for g in generations],
            "documents": len(content["documents"]),
            "bytes": target.stat().st_size,
        },
    )
    progress("done", 1, 1)
    return ExportSummary(
        path=target,
        bytes=target.stat().st_size,
        documents=len(content["documents"]),
        versions=len(versions),
        generations=[g.number for g in generations],
        chunks=chunk_total,
    )


# --- verifying an archive --------------------------------------------------------------


def archive_verify(path: Path, *, max_bytes: int | None = None) -> dict[str, Any]:
    """The manifest of a complete, untampered archive; TransferError saying what is wrong
    otherwise. Every member is read and hashed (its declared sizes are not trusted), and
    the whole is bounded by ``max_bytes`` unpacked (RAGSTUDIO_IMPORT_MAX_BYTES)."""
    limit = max_bytes if max_bytes is not None else rag_settings()["IMPORT_MAX_BYTES"]
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TransferError(f"not a knowledge-base archive, or an incomplete one: {exc}") from None
    with archive:
        names = [i.filename for i in archive.infolist()]
        if len(names) != len(set(names)):
            raise TransferError("the archive holds a member twice: it was tampered with")
        if MANIFEST not in names:
            raise TransferError(f"the archive has no {MANIFEST}: not a knowledge-base archive")
        manifest = _read_json(archive, MANIFEST, 1 << 26)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            fmt = manifest.get("format") if isinstance(manifest, dict) else None
            raise TransferError(f"archive format {fmt!r}: this release reads format {FORMAT}")
        files = manifest.get("files")
        if not isinstance(files, dict) or CONTENT not in files:
            raise TransferError(f"the manifest lists no {CONTENT}")
        extra = sorted(set(names) - set(files) - {MANIFEST})
        if extra:
            raise TransferError(
                f"the archive holds members its manifest does not list: {extra[:5]}"
            )
        total = 0
        for name, entry in files.items():
            if not _member_name_ok(name):
                raise TransferError(f"the manifest names an unexpected member: {name!r}")
            if name not in names:
                raise TransferError(f"{name} is missing from the archive: it is incomplete")
            declared = entry.get("size") if isinstance(entry, dict) else None
            if not isinstance(declared, int) or declared < 0:
                raise TransferError(f"the manifest gives {name} no size")
            total += declared
            if total > limit:
                raise TransferError(
                    f"the archive unpacks to over {limit:,} bytes "
                    "(RAGSTUDIO_IMPORT_MAX_BYTES): refused"
                )
            digest = hashlib.sha256()
            size = 0
            try:
                with archive.open(name) as member:
                    while block := member.read(1 << 20):
                        size += len(block)
                        if size > declared:
                            raise TransferError(f"{name} is larger than its manifest says")
                        digest.update(block)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise TransferError(f"{name} cannot be read: {exc}") from None
            if size != declared or digest.hexdigest() != entry.get("sha256"):
                raise TransferError(f"{name} does not match its checksum: the archive is damaged")
            if name.startswith("uploads/") and name.removeprefix("uploads/") != entry["sha256"]:
                raise TransferError(f"{name} is not the file its name says")
    return manifest


def _member_name_ok(name: str) -> bool:
    if name == CONTENT:
        return True
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == "uploads":
        return len(parts[1]) == 64 and all(c in "0123456789abcdef" for c in parts[1])
    return (
        len(parts) == 3
        and parts[0] == "generations"
        and parts[1].isdigit()
        and len(parts[1]) < 10
        and parts[2] in ("chunks.parquet", "passages.parquet")
    )


def _read_json(archive: zipfile.ZipFile, name: str, limit: int) -> Any:
    with archive.open(name) as member:
        raw = member.read(limit + 1)
    if len(raw) > limit:
        raise TransferError(f"{name} is too large")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise TransferError(f"{name} is not valid JSON: {exc}") from None


# --- import ----------------------------------------------------------------------------


@dataclass
class ImportResult:
    kb: KnowledgeBase
    documents: int = 0
    generations: list[int] = field(default_factory=list)
    chunks: int = 0
    embedded: int = 0  # always 0: an import writes the vectors it carries
    pending: list[int] = field(default_factory=list)  # documents to index again here
    chunk_ids: dict[str, str] = field(default_factory=dict)  # exported id -> id here


def _users(names: set[str]) -> dict[str, Any]:
    names.discard("")
    model = get_user_model()
    return {
        u.get_username(): u for u in model.objects.filter(**{f"{model.USERNAME_FIELD}__in": names})
    }


def _same_model(manifest: dict[str, Any]) -> str:
    """Why the archive's vectors cannot be used here ("" when they can)."""
    spec = str(manifest.get("embedder") or "")
    try:
        embedder = embedder_get(spec)
    except Exception as exc:  # an unknown spec, or a provider not configured here
        return f"its model {spec!r} is not available here ({exc})"
    fingerprints = manifest.get("fingerprints") or {}
    for number, fingerprint in fingerprints.items():
        if fingerprint and fingerprint != embedder.fingerprint:
            return (
                f"generation #{number} was built by {fingerprint}; {spec!r} here is "
                f"{embedder.fingerprint}"
            )
    if embedder.dimensions != manifest.get("dimensions"):
        return f"{spec!r} here gives {embedder.dimensions}-d vectors"
    return ""


def _quota_bytes(owner: Any, content: dict[str, Any]) -> None:
    """The owner's storage quota holds the archive's files too (RAGSTUDIO_QUOTA_BYTES)."""
    quota = storage_quota(owner)
    if quota is None:
        return
    used, limit = quota
    incoming = 0
    for d in _list(content, "documents"):
        for v in _list(d, "versions"):
            fields = v.get("fields")
            size = fields.get("size") if isinstance(fields, dict) else 0
            incoming += size if isinstance(size, int) and size > 0 else 0
    if used + incoming > limit:
        raise Forbidden(
            f"over the storage quota: the archive's files take {incoming:,} bytes, "
            f"{used:,} of {limit:,} are used",
            {"quota": "bytes", "limit": limit},
        )


def _model_here(kb_values: dict[str, Any], owner: Any) -> dict[str, Any]:
    """For documents only: the archive's model when it can be used here, else this
    installation's default (its chunking kept where it fits)."""
    spec = str(kb_values.get("embedder") or "")
    try:
        if not embedder_permitted(spec, owner):
            raise Forbidden(spec)
        embedder_get(spec)
        return {}
    except Exception:  # not available, or not for this user: the default model instead
        built = build_settings_resolve(
            embedder=None, chunk_size=None, chunk_overlap=None, actor=owner
        )
        return {"embedder": built.embedder, "embedding_dimensions": built.dimensions}


def kb_import(
    path: Path,
    *,
    owner: Any = None,
    slug: str | None = None,
    documents_only: bool = False,
    actor: Any = None,
    progress: Progress = _quiet,
) -> ImportResult:
    """Create a knowledge base from the archive at ``path`` (verified first, whole). With
    ``documents_only``, or when nothing was exported but documents, its documents are
    returned as ``pending`` for the caller to index; otherwise its generations' vectors
    are written as they are (Conflict when the model here differs)."""
    manifest = archive_verify(path)
    progress("verified", 0, 1)
    with zipfile.ZipFile(path) as archive:
        content = _read_json(archive, CONTENT, manifest["files"][CONTENT]["size"])
    if not isinstance(content, dict) or not isinstance(content.get("knowledge_base"), dict):
        raise TransferError(f"{CONTENT} does not describe a knowledge base")
    if not documents_only and manifest.get("fingerprints"):
        problem = _same_model(manifest)
        if problem:
            raise Conflict(
                f"this archive's vectors were made by another model: {problem}. Import it "
                "with documents only to index it again here",
                {"reason": "model"},
            )
    kb_values = content["knowledge_base"]
    slug = (slug or str(kb_values.get("slug") or "")).strip().lower()
    if not SLUG.match(slug):
        raise ValidationError(f"slug must be {SLUG_RULE}", {"field": "slug"})
    if KnowledgeBase.objects.filter(slug=slug, owner=owner).exists():
        raise Conflict(
            f"a knowledge base with slug {slug!r} exists already: import it under another",
            {"field": "slug"},
        )
    _quota_knowledge_bases(owner)
    _quota_bytes(owner, content)
    if documents_only:
        kb_values = {**kb_values, **_model_here(kb_values, owner)}
        content = {**content, "knowledge_base": kb_values}
    elif not embedder_permitted(str(kb_values.get("embedder") or ""), owner):
        raise Forbidden(f"the model {kb_values.get('embedder')!r} is not allowed for you here")
    written: list[Generation] = []
    uploads: list[str] = []
    try:
        with (
            transaction.atomic(),
            tempfile.TemporaryDirectory(dir=transfers_dir(), prefix=".import-") as work,
        ):
            result = _import_rows(
                path,
                manifest,
                content,
                owner,
                slug,
                documents_only,
                Path(work),
                written,
                uploads,
                progress,
            )
            AuditEvent.record(
                AuditEvent.Action.KB_IMPORT,
                actor=actor,
                kb=result.kb,
                target=f"knowledge base {result.kb.slug}",
                detail={
                    "from": str(kb_values.get("slug") or ""),
                    "app_version": manifest.get("app_version"),
                    "generations": result.generations,
                    "documents": result.documents,
                    "chunks": result.chunks,
                },
            )
    except BaseException:
        for generation in written:
            with contextlib.suppress(Exception):
                generation_store(generation).drop()
        for storage_path in uploads:
            with contextlib.suppress(Exception):
                document_file_forget(storage_path)
        raise
    progress("done", 1, 1)
    return result


def _import_rows(
    path: Path,
    manifest: dict[str, Any],
    content: dict[str, Any],
    owner: Any,
    slug: str,
    documents_only: bool,
    work: Path,
    written: list[Generation],
    uploads: list[str],
    progress: Progress,
) -> ImportResult:
    kb_values = content["knowledge_base"]
    docs_in = _list(content, "documents")
    gens_in = [] if documents_only else _list(content, "generations")
    names = {str(kb_values.get("owner") or "")}
    for d in docs_in:
        names.add(str(d.get("uploaded_by") or ""))
        names.update(str(v.get("uploaded_by") or "") for v in _list(d, "versions"))
    for g in gens_in:
        names.update(str(e.get("actor") or "") for e in _list(g, "events"))
    users = _users(names)
    kb = _build(
        KnowledgeBase,
        kb_values,
        exclude=["slug", "rollback_stack"],
        slug=slug,
        owner=owner,
    )
    kb.save()
    result = ImportResult(kb=kb)
    with zipfile.ZipFile(path) as archive:
        doc_map = _import_documents(
            archive, kb, docs_in, users, manifest, documents_only, uploads, progress
        )
        result.documents = len(doc_map)
        gen_map: dict[int, Generation] = {}
        for number, g in enumerate(gens_in, 1):
            generation = _import_generation(
                archive, kb, g, users, doc_map, work, written, result.chunk_ids, progress
            )
            gen_map[generation.number] = generation
            result.generations.append(generation.number)
            result.chunks += generation.chunk_count
            progress("generations", number, len(gens_in))
    active = kb_values.get("active_generation")
    if active is not None and active in gen_map:
        kb.active_generation = gen_map[active]
    kb.rollback_stack = [
        gen_map[n].pk for n in kb_values.get("rollback_stack") or [] if n in gen_map
    ]
    kb.save(update_fields=["active_generation", "rollback_stack"])
    _import_evaluations(kb, content, doc_map, gen_map, result.chunk_ids)
    if documents_only or not gen_map:
        Document.objects.filter(knowledge_base=kb).update(
            status=Document.Status.PENDING, serving_version=0, chunk_count=0
        )
        result.pending = list(
            Document.objects.filter(knowledge_base=kb).values_list("pk", flat=True)
        )
    else:
        result.pending = list(
            Document.objects.filter(knowledge_base=kb)
            .exclude(status__in=[Document.Status.INDEXED, Document.Status.FAILED])
            .values_list("pk", flat=True)
        )
        Document.objects.filter(pk__in=result.pending).update(status=Document.Status.PENDING)
    return result


def transfers_dir() -> Path:
    """Where archives and an import's scratch files live on this host."""
    path = Path(rag_settings()["TRANSFER_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _list(obj: Any, key: str) -> list[dict[str, Any]]:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TransferError(f"{key} in the archive is not a list of objects")
    return value


def _import_documents(
    archive: zipfile.ZipFile,
    kb: KnowledgeBase,
    docs_in: list[dict[str, Any]],
    users: dict[str, Any],
    manifest: dict[str, Any],
    documents_only: bool,
    uploads: list[str],
    progress: Progress,
) -> dict[int, Document]:
    """The documents and their versions, and each file put where this installation keeps
    uploads; old document id -> the new row."""
    files = manifest["files"]
    doc_map: dict[int, Document] = {}
    for number, d in enumerate(docs_in, 1):
        old = d.get("id")
        if not isinstance(old, int) or old in doc_map:
            raise TransferError("a document in the archive has no id, or a repeated one")
        versions_in = _list(d, "versions")
        if not versions_in:
            raise TransferError(f"document {old} in the archive has no version")
        doc = _build(
            Document,
            d.get("fields"),
            exclude=["storage_path"],
            knowledge_base=kb,
            uploaded_by=users.get(str(d.get("uploaded_by") or "")),
        )
        versions = [
            _build(
                DocumentVersion,
                v.get("fields"),
                exclude=["storage_path"],
                uploaded_by=users.get(str(v.get("uploaded_by") or "")),
            )
            for v in versions_in
        ]
        numbers = [v.number for v in versions]
        if len(set(numbers)) != len(numbers) or doc.version not in numbers:
            raise TransferError(f"document {old} in the archive has inconsistent versions")
        for version in versions:
            version.storage_path = upload_storage_path(kb.pk, version.sha256)
            member = f"uploads/{version.sha256}"
            if member in files and version.storage_path not in uploads:
                _put_upload(archive, member, version.storage_path)
                uploads.append(version.storage_path)
        doc.storage_path = upload_storage_path(
            kb.pk, next(v.sha256 for v in versions if v.number == doc.version)
        )
        if documents_only:
            doc.serving_version = 0
        doc.save()
        for version in versions:
            version.document = doc
        DocumentVersion.objects.bulk_create(versions)
        _keep_times(Document, [doc], d.get("fields"))
        for version, v in zip(versions, versions_in, strict=True):
            _keep_times(DocumentVersion, [version], v.get("fields"))
        doc_map[old] = doc
        if number % 100 == 0 or number == len(docs_in):
            progress("documents", number, len(docs_in))
    return doc_map


def _keep_times(model: type[models.Model], rows: Sequence[Any], values: Any) -> None:
    """The exported creation times, which ``auto_now_add`` replaced on insert."""
    if not isinstance(values, dict) or "created_at" not in values:
        return
    try:
        when = models.DateTimeField().to_python(values["created_at"])
    except DjangoValidationError:
        return
    if when is not None:
        model._default_manager.filter(pk__in=[r.pk for r in rows]).update(created_at=when)


def _put_upload(archive: zipfile.ZipFile, member: str, storage_path: str) -> None:
    local = upload_local_path(storage_path)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".import-{local.name}")
    with archive.open(member) as source, tmp.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    tmp.replace(local)
    document_file_share(storage_path)


def _import_generation(
    archive: zipfile.ZipFile,
    kb: KnowledgeBase,
    g: dict[str, Any],
    users: dict[str, Any],
    doc_map: dict[int, Document],
    work: Path,
    written: list[Generation],
    chunk_ids: dict[str, str],
    progress: Progress,
) -> Generation:
    status = g.get("status")
    if status not in KEPT:
        raise TransferError(f"a generation in the archive has status {status!r}")
    generation = _build(
        Generation,
        g.get("fields"),
        exclude=["table_name", "bm25_version", "status", "collected_at", "files_deleted_at"],
        knowledge_base=kb,
    )
    if generation.dimensions != kb.embedding_dimensions:
        raise TransferError(
            f"generation #{generation.number} has {generation.dimensions}-d vectors"
        )
    generation.table_name = table_name(kb.pk, generation.number)
    generation.save()
    written.append(generation)
    chunks = _read_parquet(archive, f"generations/{generation.number}/chunks.parquet", work)
    passages = _read_parquet(archive, f"generations/{generation.number}/passages.parquet", work)
    store = generation_store(generation)
    count = 0
    rows = _rows(chunks, passages, doc_map, generation.dimensions, generation.number, chunk_ids)
    for batch in rows:
        store.write(batch)
        count += len(batch)
        progress(f"generation #{generation.number}", count, chunks.num_rows)
    store.vectors.ensure_vector_index(min_rows=rag_settings()["ANN_MIN_ROWS"])
    generation.chunk_count = count
    generation.vector_count = count
    generation.save(update_fields=["chunk_count", "vector_count"])
    events = _list(g, "events")
    for e in events:
        event = _build(
            GenerationEvent,
            e.get("fields"),
            generation=generation,
            actor=users.get(str(e.get("actor") or "")),
        )
        event.save()
        _keep_times(GenerationEvent, [event], e.get("fields"))
    generation_imported(generation=generation, status=str(status))
    return generation


def _read_parquet(archive: zipfile.ZipFile, member: str, work: Path) -> pa.Table:
    if member not in archive.namelist():
        raise TransferError(f"the archive has no {member}")
    local = work / member.replace("/", "_")
    with archive.open(member) as source, local.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    try:
        return pq.read_table(local)
    except (pa.ArrowException, OSError) as exc:
        raise TransferError(f"{member} is not a readable table: {exc}") from None


# What every exported row must have; the other columns came later, and a table of an
# older release lacks them (they import as empty).
REQUIRED_COLUMNS = ("id", "document_id", "ordinal", "content_hash", "text")


def _column(table: pa.Table, name: str, kind: pa.DataType) -> list[Any]:
    if name not in table.column_names:
        if name in REQUIRED_COLUMNS and table.num_rows:
            raise TransferError(f"the exported rows have no column {name!r}")
        return [None] * table.num_rows
    try:
        return table.column(name).cast(kind).to_pylist()
    except (pa.ArrowException, ValueError) as exc:
        raise TransferError(f"the exported column {name!r} is not {kind}: {exc}") from None


def _rows(
    chunks: pa.Table,
    passages: pa.Table,
    doc_map: dict[int, Document],
    dimensions: int,
    number: int,
    id_map: dict[str, str],
) -> Iterator[list[EmbeddedChunk]]:
    """The exported rows with their ids derived again from the new document ids, each
    passage carried by its first chunk (as the chunker hands them to the stores)."""
    n = chunks.num_rows
    cols = {name: _column(chunks, name, kind) for name, kind in CHUNK_COLUMNS.items()}
    if "vector" not in chunks.column_names:
        raise TransferError(f"generation #{number}'s rows have no vectors")
    try:
        vectors = np.asarray(
            chunks.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False),
            dtype=np.float32,
        ).reshape(n, dimensions)
    except (ValueError, pa.ArrowException) as exc:
        raise TransferError(
            f"generation #{number}'s vectors are not {dimensions}-d: {exc}"
        ) from None
    if not np.isfinite(vectors).all():
        raise TransferError(f"generation #{number} holds vectors that are not numbers")
    passage_of = {
        pid: (text, members)
        for pid, text, members in zip(
            _column(passages, "id", pa.string()),
            _column(passages, "text", pa.string()),
            _column(passages, "chunks", pa.list_(pa.string())),
            strict=True,
        )
    }
    new_ids: dict[str, str] = {}
    for i in range(n):
        old_doc = cols["document_id"][i]
        doc = doc_map.get(old_doc)
        ordinal, digest, version = (
            cols["ordinal"][i],
            cols["content_hash"][i],
            cols["version"][i] or 1,
        )
        if doc is None or ordinal is None or ordinal < 0 or not digest or cols["id"][i] is None:
            raise TransferError(f"generation #{number} has a row of no exported document")
        new_ids[cols["id"][i]] = chunk_id(doc.pk, ordinal, digest, version)
    id_map.update(new_ids)
    index_of = {cid: i for i, cid in enumerate(cols["id"])}
    heads: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # first chunk -> passage
    for pid, (text, members) in passage_of.items():
        if not members or any(m not in new_ids for m in members):
            continue  # a passage of rows left out of the export
        first = members[0]
        if text is None:
            text = _joined([cols["text"][index_of[m]] or "" for m in members])
        heads[first] = (pid, text, tuple(new_ids[m] for m in members))
    passage_ids: dict[str, str] = {}
    for first, (pid, text, _members) in heads.items():
        i = index_of[first]
        doc = doc_map[cols["document_id"][i]]
        passage_ids[pid] = parent_id(
            doc.pk, cols["ordinal"][i], content_hash(text), cols["version"][i] or 1
        )
    batch: list[EmbeddedChunk] = []
    for i in range(n):
        old_id = cols["id"][i]
        doc = doc_map[cols["document_id"][i]]
        try:
            metadata = json.loads(cols["metadata"][i] or "{}")
        except ValueError:
            raise TransferError(f"generation #{number} has a row with broken metadata") from None
        head = heads.get(old_id)
        old_parent = cols["parent"][i] or ""
        chunk = Chunk(
            id=new_ids[old_id],
            document_id=doc.pk,
            ordinal=cols["ordinal"][i],
            text=cols["text"][i] or "",
            content_hash=cols["content_hash"][i],
            token_count=cols["token_count"][i] or 0,
            title=cols["title"][i] or "",
            page=cols["page"][i],
            record_id=cols["record_id"][i],
            metadata=metadata if isinstance(metadata, dict) else {},
            parent_id=passage_ids.get(old_parent, ""),
            parent_text=head[1] if head else "",
            parent_chunks=head[2] if head else (),
            version=cols["version"][i] or 1,
        )
        batch.append(EmbeddedChunk(chunk, vectors[i], new=True))
        if len(batch) >= WRITE_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _joined(texts: Sequence[str]) -> str:
    """A passage from its chunks' texts, each chunk's overlap with the one before it
    taken once (for indexes of a release that did not store passages' text)."""
    out = ""
    for text in texts:
        overlap = 0
        for k in range(min(len(out), len(text)), 0, -1):
            if out.endswith(text[:k]):
                overlap = k
                break
        out = out + text[overlap:] if overlap else (f"{out} {text}" if out else text)
    return out


def _import_evaluations(
    kb: KnowledgeBase,
    content: dict[str, Any],
    doc_map: dict[int, Document],
    gen_map: dict[int, Generation],
    chunk_ids: dict[str, str],
) -> None:
    users = _users(
        {
            str(x.get("created_by") or "")
            for s in _list(content, "evaluation_sets")
            for x in [
                *_list(s, "runs"),
                *(j for q in _list(s, "queries") for j in _list(q, "judgements")),
            ]
        }
    )
    for s in _list(content, "evaluation_sets"):
        evaluation_set = _build(EvaluationSet, s.get("fields"), knowledge_base=kb)
        evaluation_set.save()
        query_map: dict[int, int] = {}
        for q in _list(s, "queries"):
            query = _build(EvaluationQuery, q.get("fields"), evaluation_set=evaluation_set)
            query.save()
            if isinstance(q.get("id"), int):
                query_map[q["id"]] = query.pk
            judgements = []
            for j in _list(q, "judgements"):
                doc = doc_map.get(j.get("document"))  # type: ignore[arg-type]
                if doc is None:
                    continue
                judgement = _build(
                    Judgement,
                    j.get("fields"),
                    query=query,
                    document=doc,
                    created_by=users.get(str(j.get("created_by") or "")),
                )
                judgement.chunk_id = chunk_ids.get(judgement.chunk_id, "")
                judgements.append(judgement)
            Judgement.objects.bulk_create(judgements)
        for r in _list(s, "runs"):
            generation = gen_map.get(r.get("generation"))  # type: ignore[arg-type]
            if generation is None:
                continue
            run = _build(
                EvaluationRun,
                r.get("fields"),
                evaluation_set=evaluation_set,
                generation=generation,
                created_by=users.get(str(r.get("created_by") or "")),
            )
            run.per_query = _remap_per_query(run.per_query, doc_map, query_map)
            run.save()
            _keep_times(EvaluationRun, [run], r.get("fields"))


def _remap_per_query(
    per_query: Any, doc_map: dict[int, Document], query_map: dict[int, int]
) -> list[Any]:
    if not isinstance(per_query, list):
        return []
    out = []
    for entry in per_query:
        if not isinstance(entry, dict):
            continue
        entry = dict(entry)
        entry["id"] = query_map.get(entry.get("id"))  # type: ignore[arg-type]
        modes = entry.get("modes")
        if not isinstance(modes, dict):
            modes = {}
        new_modes = {}
        for mode, values in modes.items():
            if not isinstance(values, dict):
                continue
            values = dict(values)
            values["top"] = [
                [doc_map[u[0]].pk, *u[1:]]
                for u in values.get("top") or []
                if isinstance(u, list) and u and u[0] in doc_map
            ]
            new_modes[mode] = values
        entry["modes"] = new_modes
        out.append(entry)
    return out
