"""Where a knowledge base's files live and the handles on them: each generation's LanceDB
table and tantivy index (their names and paths are derived here, and only here), the
uploaded files, a fresh store for writers and a long-lived one for readers, the build
context a job opens once, sizes on disk, and the outbox of files to delete after the rows
that referenced them are gone."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.runner import PipelineConfig
from knowledge_bases.generations.embedding import embedder_get
from knowledge_bases.generations.versions import versions_mask, versions_sweep
from knowledge_bases.models import (
    ApiFile,
    Document,
    DocumentVersion,
    Generation,
    KnowledgeBase,
    StorageCleanup,
)
from ragstudio.core.errors import Conflict
from ragstudio.core.files import directory_bytes
from ragstudio.core.types import Embedder, SourceDocument, VectorCache
from ragstudio.env import rag_settings
from search.stores.generation import (
    CompositeCache,
    GenerationStore,
    StoreLocation,
    drop_files,
    reader_store,
)
from search.stores.objects import ObjectStore, storage_options_items

log = logging.getLogger(__name__)

# --- names and paths ---------------------------------------------------------------------


def table_name(kb_id: int, number: int) -> str:
    """A generation's LanceDB table (by KB id: slugs change)."""
    return f"kb{kb_id}_g{number}"


def bm25_local_path(kb_id: int, number: int | None = None) -> Path:
    """Where this host keeps a generation's tantivy index (or all of a KB's): every host
    has a data directory of its own."""
    root = Path(rag_settings()["BM25_DIR"]) / f"kb{kb_id}"
    return root / f"g{number}" if number is not None else root


def bm25_remote_uri(kb_id: int, number: int | None = None) -> str:
    """Where the object store keeps a generation's tantivy index (or all of a KB's), ""
    without one."""
    root = rag_settings()["STORAGE_URI"]
    if not root:
        return ""
    return f"{root}/bm25/kb{kb_id}" + (f"/g{number}" if number is not None else "")


def upload_dir(kb_id: int) -> Path:
    """This host's directory of a KB's uploaded files."""
    return Path(rag_settings()["UPLOAD_DIR"]) / f"kb{kb_id}"


def upload_storage_path(kb_id: int, sha256: str) -> str:
    """The name an uploaded file is stored under (relative, the same on every host)."""
    return f"kb{kb_id}/{sha256[:2]}/{sha256}"


def upload_local_path(storage_path: str) -> Path:
    return Path(rag_settings()["UPLOAD_DIR"]) / storage_path


def upload_remote_uri(storage_path: str) -> str:
    """Where the object store keeps an uploaded file (or a KB's uploads), "" without one."""
    root = rag_settings()["STORAGE_URI"]
    return f"{root}/uploads/{storage_path}" if root else ""


def storage_options() -> tuple[tuple[str, str], ...]:
    return storage_options_items(rag_settings()["STORAGE_OPTIONS"])


def generation_location(generation: Generation) -> StoreLocation:
    kb_id, number = generation.knowledge_base_id, generation.number
    return StoreLocation(
        lancedb_uri=rag_settings()["LANCEDB_URI"],
        table_name=generation.table_name,
        bm25_path=bm25_local_path(kb_id, number),
        dimensions=generation.dimensions,
        storage_options=storage_options(),
        bm25_remote=bm25_remote_uri(kb_id, number),
        language=generation.language,
    )


# --- uploaded files ------------------------------------------------------------------


def _upload_store() -> ObjectStore | None:
    root = rag_settings()["STORAGE_URI"]
    return ObjectStore(f"{root}/uploads", storage_options()) if root else None


def document_file_share(storage_path: str) -> None:
    """Put an uploaded file where every host can read it (nothing on one machine)."""
    store = _upload_store()
    if store is not None:
        store.put_file(storage_path, upload_local_path(storage_path))


def document_read(storage_path: str) -> bytes:
    """An uploaded file's bytes: from this host's copy, else from the object store (kept
    here as a cache). FileNotFoundError when neither has it."""
    local = upload_local_path(storage_path)
    if local.exists():
        return local.read_bytes()
    store = _upload_store()
    if store is not None and store.get_file(storage_path, local):
        return local.read_bytes()
    raise FileNotFoundError(f"uploaded file {storage_path} is missing")


def document_file_forget(storage_path: str) -> None:
    """Remove an uploaded file here and from the object store."""
    upload_local_path(storage_path).unlink(missing_ok=True)
    store = _upload_store()
    if store is not None:
        store.delete(storage_path)


def uploads_sweep(*, grace_seconds: float = 3600.0) -> dict[str, int]:
    """Files a crash left on this host, once older than ``grace_seconds`` (an upload in
    progress is younger): upload temp files (``.upload-*``), request bodies Django spooled
    to disk, and stored files no document version or API file names (an upload killed
    between storing its file and committing its row)."""
    cutoff = time.time() - grace_seconds
    removed = {"temp": 0, "orphans": 0}
    root = Path(rag_settings()["UPLOAD_DIR"])
    if root.exists():
        referenced = (
            set(DocumentVersion.objects.values_list("storage_path", flat=True))
            | set(Document.objects.values_list("storage_path", flat=True))
            | set(ApiFile.objects.values_list("storage_path", flat=True))
        )
        for path in root.rglob("*"):
            try:
                if not path.is_file() or path.stat().st_mtime >= cutoff:
                    continue
                if path.name.startswith(".upload-"):
                    path.unlink()
                    removed["temp"] += 1
                elif path.relative_to(root).as_posix() not in referenced:
                    path.unlink()
                    removed["orphans"] += 1
            except FileNotFoundError:
                continue  # gone meanwhile
    spool = settings.FILE_UPLOAD_TEMP_DIR
    if spool and Path(spool).is_dir():
        for path in Path(spool).iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed["temp"] += 1
    return removed


def document_sources(documents: Iterable[Document]) -> list[SourceDocument]:
    """Documents (their latest versions) as the pipeline reads them: each file read when
    its turn comes."""
    return [
        SourceDocument(
            id=doc.pk,
            filename=doc.original_filename,
            title=doc.title,
            read=functools.partial(document_read, doc.storage_path),
            version=doc.version,
        )
        for doc in documents
    ]


def build_config(
    *, store_batch_size: int | None = None, embed_batch_size: int | None = None
) -> PipelineConfig:
    """The pipeline's settings for a build here: batch sizes (the installation's unless a
    job set its own), the size limit and the parse budget of one document."""
    cfg = rag_settings()
    return PipelineConfig(
        store_batch_size=store_batch_size or cfg["STORE_BATCH_SIZE"],
        embed_batch_size=embed_batch_size or cfg["EMBED_BATCH_SIZE"],
        max_document_bytes=settings.RAGSTUDIO_MAX_UPLOAD_BYTES,
        max_document_chars=cfg["MAX_DOCUMENT_CHARS"] or None,
        parse_timeout=cfg["PARSE_TIMEOUT_SECONDS"] or None,
        parse_memory_mb=cfg["PARSE_MEMORY_MB"],
        job_parse_budget=cfg["JOB_PARSE_BUDGET_SECONDS"] or None,
        parse_after_budget=cfg["PARSE_AFTER_BUDGET_SECONDS"],
    )


# --- handles -------------------------------------------------------------------------


def _record_bm25_version(generation_id: int) -> Callable[[int], None]:
    def record(version: int) -> None:
        # Raised only: a slower writer's older version never overwrites a newer one.
        Generation.objects.filter(pk=generation_id, bm25_version__lt=version).update(
            bm25_version=version
        )
        if threading.current_thread() is not threading.main_thread():
            connection.close()  # the sink's writer thread: no connection left behind

    return record


def generation_store(generation: Generation) -> GenerationStore:
    """A fresh handle on the LanceDB table and tantivy index of one generation, up to date
    with the object store; what it publishes is recorded on the generation's row."""
    store = GenerationStore.open(generation_location(generation))
    if store.bm25.replica is not None:
        store.bm25.replica.on_publish = _record_bm25_version(generation.pk)
        store.bm25.sync_before_use()
    return store


def generation_reader(generation: Generation) -> GenerationStore:
    """The process's long-lived handle for searching one generation, holding at least the
    BM25 version the generation's row says was published (rows are read per query)."""
    store = reader_store(generation_location(generation))
    store.bm25.sync(generation.bm25_version)
    return store


def reuse_cache(
    kb_id: int,
    fingerprint: str,
    *,
    first: GenerationStore | None = None,
    exclude: int | None = None,
) -> CompositeCache:
    """Where a build finds vectors for text it has seen before: ``first`` (the target,
    so a resumed build finds its own rows), then every generation of the KB built by the
    same model whose files remain, newest first."""
    others = (
        Generation.objects.filter(
            knowledge_base_id=kb_id, embedder_fingerprint=fingerprint, files_deleted_at__isnull=True
        )
        .exclude(status=Generation.Status.COLLECTED)
        .order_by("-number")
    )
    if exclude is not None:
        others = others.exclude(pk=exclude)
    stores = [first] if first is not None else []
    return CompositeCache([*stores, *(generation_store(g) for g in others)])


@dataclass
class GenerationBuild:
    """One job's handles on the generation it writes, opened once for the whole job: its
    stores, its model (checked against what the generation was built with), the chunker
    of its settings, and where unchanged text finds its vectors."""

    generation: Generation
    store: GenerationStore
    embedder: Embedder
    chunker: Chunker
    cache: VectorCache

    def documents_present(self, document_ids: Sequence[int]) -> set[int]:
        return self.store.vectors.documents_present(document_ids)

    def rows(self) -> int:
        return self.store.vectors.count()

    def mask_pending(self, documents: Iterable[Document], *, serving: bool) -> None:
        """Mask the versions about to be written, so none is seen until all its rows are
        (a version already serving here stays visible). In stores of an older release,
        which do not tell versions apart, a document's old rows go first."""
        to_mask = [d for d in documents if not (serving and d.version == d.serving_version)]
        if not self.store.supports_versions():
            replaced = [
                d.pk for d in to_mask if d.serving_version and d.serving_version != d.version
            ]
            self.store.delete_documents(replaced)
        versions_mask(self.generation, [(d.pk, d.version) for d in to_mask])

    def sweep(self) -> int:
        """Delete the rows of versions no search will see again (replaced, failed,
        superseded)."""
        return versions_sweep(self.generation, self.store)

    def index_vectors(self) -> str:
        """Build (or bring up to date) the ANN index once the table is past the size
        threshold: "built", "updated" or what was left as it is."""
        return self.store.vectors.ensure_vector_index(min_rows=rag_settings()["ANN_MIN_ROWS"])


def open_build(generation: Generation, *, reuse_other_generations: bool = False) -> GenerationBuild:
    """The build context of a job writing ``generation``. Conflict when the model gives
    vectors other than those the generation holds; the model's fingerprint is recorded by
    the first job. ``reuse_other_generations``: a rebuild also reuses the vectors of the
    KB's other generations built by the same model."""
    embedder = embedder_get(generation.embedder)
    recorded = generation.embedder_fingerprint
    if recorded and recorded != embedder.fingerprint:
        raise Conflict(
            "the embedding model changed since this generation was built "
            f"({recorded} -> {embedder.fingerprint}): rebuild instead"
        )
    if embedder.dimensions != generation.dimensions:
        raise Conflict(
            f"the embedder gives {embedder.dimensions}-d vectors, the generation holds "
            f"{generation.dimensions}-d"
        )
    if not recorded:
        Generation.objects.filter(pk=generation.pk, embedder_fingerprint="").update(
            embedder_fingerprint=embedder.fingerprint
        )
        generation.embedder_fingerprint = embedder.fingerprint
    store = generation_store(generation)
    cache: VectorCache = store
    if reuse_other_generations:
        cache = reuse_cache(
            generation.knowledge_base_id, embedder.fingerprint, first=store, exclude=generation.pk
        )
    chunker = Chunker(
        embedder.tokenizer, size=generation.chunk_size, overlap=generation.chunk_overlap
    )
    return GenerationBuild(generation, store, embedder, chunker, cache)


# --- sizes ---------------------------------------------------------------------------


def generation_size_on_disk(generation: Generation, *, stored: bool = False) -> int:
    """Bytes of the generation's tantivy directory and (local) LanceDB table; 0 when its
    files are deleted. In an object store: the objects' sizes when ``stored`` (a listing
    of the store: for the rebuild plan, not for pages that poll), else 0."""
    if generation.files_deleted_at:
        return 0
    cfg = rag_settings()
    kb_id, number = generation.knowledge_base_id, generation.number
    if cfg["STORAGE_URI"]:
        if not stored:
            return 0
        store = ObjectStore(cfg["STORAGE_URI"], storage_options())
        prefixes = [bm25_remote_uri(kb_id, number)[len(cfg["STORAGE_URI"]) + 1 :]]
        if cfg["LANCEDB_URI"] == f"{cfg['STORAGE_URI']}/lancedb":
            prefixes.append(f"lancedb/{generation.table_name}.lance")
        return sum(sum(store.list(prefix).values()) for prefix in prefixes)
    paths = [bm25_local_path(kb_id, number)]
    uri = cfg["LANCEDB_URI"]
    if "://" not in uri:
        paths.append(Path(uri) / f"{generation.table_name}.lance")
    return directory_bytes(*paths)


# --- deleting files ------------------------------------------------------------------


def generation_files_delete(generation: Generation) -> None:
    """Delete a collected generation's table and index, then record that they are gone."""
    generation_store(generation).drop()
    generation.files_deleted_at = timezone.now()
    Generation.objects.filter(pk=generation.pk).update(files_deleted_at=generation.files_deleted_at)


def knowledge_base_files_forget(*, kb: KnowledgeBase) -> list[int]:
    """Record every file of a knowledge base for deletion (its generations' tables, its
    tantivy and upload directories), in the transaction that deletes its rows; the files go
    after the commit (``storage_cleanup_run``)."""
    cfg = rag_settings()
    rows = [
        StorageCleanup(lancedb_uri=cfg["LANCEDB_URI"], table_name=g.table_name)
        for g in kb.generations.filter(files_deleted_at__isnull=True)
    ]
    rows.append(StorageCleanup(path=str(bm25_local_path(kb.pk))))
    rows.append(StorageCleanup(path=str(upload_dir(kb.pk))))
    if cfg["STORAGE_URI"]:  # the shared copies (other hosts' caches are only caches)
        rows.append(StorageCleanup(remote=bm25_remote_uri(kb.pk)))
        rows.append(StorageCleanup(remote=upload_remote_uri(f"kb{kb.pk}")))
    return [row.pk for row in StorageCleanup.objects.bulk_create(rows)]


def storage_cleanup_run(*, ids: list[int] | None = None) -> int:
    """Delete recorded files, then their records (all of them, or these). Idempotent: a
    crash half-way leaves records that the next run finishes."""
    rows = StorageCleanup.objects.order_by("pk")
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    done = 0
    for row in rows:
        try:
            drop_files(
                lancedb_uri=row.lancedb_uri,
                table_name=row.table_name,
                path=row.path,
                remote=row.remote,
                storage_options=storage_options(),
            )
        except Exception:  # one stuck file must not keep the others
            log.exception("could not delete %s", row)
            continue
        StorageCleanup.objects.filter(pk=row.pk).delete()
        done += 1
    return done
