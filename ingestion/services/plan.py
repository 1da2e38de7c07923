"""The plan of a rebuild, before anything is spent: what changes against the active
generation, how many chunks the new settings make (chunked for real: parsing and chunking
are cheap next to embedding), how many of them already have vectors by the same model
(reused, as the rebuild would find them), how many must be embedded, how long that takes
at this installation's measured rate, and how much disk the generation will take."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import F, Sum

from ingestion.models import IngestionJob
from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.parse import parse_document
from ingestion.pipeline.sandbox import ParseSandbox
from ingestion.pipeline.types import Chunk, DocumentError
from knowledge_bases.build_settings import BuildSettings, build_settings_resolve
from knowledge_bases.engines import embedder_get, generation_store
from knowledge_bases.models import Document, Generation, KnowledgeBase
from knowledge_bases.selectors import document_path, generation_size_on_disk
from ragstudio.env import rag_settings
from ragstudio.errors import Conflict
from search.stores.generation import CompositeCache

LOOKUP_BATCH = 1000
SAMPLE_ROWS = 200  # rows of the active generation whose text sizes the disk estimate
MIN_RATE_CHUNKS = 50  # a job that embedded fewer says little about the rate


@dataclass(frozen=True)
class SettingChange:
    name: str
    active: Any
    new: Any

    @property
    def changed(self) -> bool:
        return self.active != self.new


@dataclass
class RebuildPlan:
    settings: list[SettingChange]
    documents: int
    chunks: int
    reused: int
    to_embed: int
    failed: list[dict[str, Any]] = field(default_factory=list)  # documents that will fail
    rate_chunks_per_s: float | None = None  # measured here for this model
    rate_basis: str = ""
    eta_seconds: float | None = None
    disk_bytes: int | None = None
    disk_basis: str = ""
    seconds: float = 0.0  # how long planning took

    @property
    def changes(self) -> list[SettingChange]:
        return [s for s in self.settings if s.changed]


def generation_rebuild_plan(
    *,
    kb: KnowledgeBase,
    user: Any = None,
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
) -> RebuildPlan:
    """What ``generation_rebuild_start`` with these settings would do; nothing is
    embedded or written."""
    started = time.perf_counter()
    kb.refresh_from_db()
    active = kb.active_generation
    if active is None:
        raise Conflict("this knowledge base has no active generation yet: ingest documents first")
    built = build_settings_resolve(
        embedder=embedder,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        defaults=BuildSettings(
            kb.embedder, kb.embedding_dimensions, kb.chunk_size, kb.chunk_overlap
        ),
        actor=user,
    )
    model = embedder_get(built.embedder)
    chunker = Chunker(model.tokenizer, size=built.chunk_size, overlap=built.chunk_overlap)
    documents = list(Document.objects.filter(knowledge_base=kb).order_by("pk"))
    cache = _same_model_cache(kb, model.fingerprint)
    plan = RebuildPlan(
        settings=[
            SettingChange("embedder", active.embedder, built.embedder),
            SettingChange("fingerprint", active.embedder_fingerprint, model.fingerprint),
            SettingChange("dimensions", active.dimensions, built.dimensions),
            SettingChange("chunk_size", active.chunk_size, built.chunk_size),
            SettingChange("chunk_overlap", active.chunk_overlap, built.chunk_overlap),
        ],
        documents=len(documents),
        chunks=0,
        reused=0,
        to_embed=0,
    )
    text_bytes = 0
    timeout = rag_settings()["PARSE_TIMEOUT_SECONDS"]
    sandbox = ParseSandbox(timeout) if timeout else None
    try:
        for document in documents:
            try:
                chunks = _chunks_of(document, chunker, sandbox)
            except DocumentError as exc:
                plan.failed.append(
                    {
                        "document_id": document.pk,
                        "filename": document.original_filename,
                        "reason": str(exc),
                    }
                )
                continue
            plan.chunks += len(chunks)
            plan.reused += _reused(cache, chunks)
            text_bytes += sum(len(c.text.encode()) for c in chunks)
    finally:
        if sandbox is not None:
            sandbox.close()
    plan.to_embed = plan.chunks - plan.reused
    _estimate_time(plan, model.fingerprint)
    _estimate_disk(plan, active, built.dimensions, text_bytes)
    plan.seconds = time.perf_counter() - started
    return plan


def _same_model_cache(kb: KnowledgeBase, fingerprint: str) -> CompositeCache:
    """Where the rebuild finds vectors to reuse: every generation of the KB built by the
    same model whose files remain (ingestion.jobs.run._vector_cache, less the new
    generation itself, which is empty when a rebuild starts)."""
    generations = (
        Generation.objects.filter(
            knowledge_base=kb, embedder_fingerprint=fingerprint, files_deleted_at__isnull=True
        )
        .exclude(status__in=[Generation.Status.COLLECTED])
        .order_by("-number")
    )
    return CompositeCache([generation_store(g) for g in generations])


def _chunks_of(document: Document, chunker: Chunker, sandbox: ParseSandbox | None) -> list[Chunk]:
    max_bytes = settings.RAGSTUDIO_MAX_UPLOAD_BYTES
    try:
        data = document_path(document).read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read the stored file: {exc.strerror or exc}") from None
    if sandbox is not None:
        sections = sandbox.parse(data, document.original_filename, max_bytes=max_bytes)
    else:
        sections = parse_document(data, document.original_filename, max_bytes=max_bytes)
    chunks = chunker.chunk(document.pk, sections, title=document.title)
    if not chunks:
        raise DocumentError("no text found in the document")
    return chunks


def _reused(cache: CompositeCache, chunks: Sequence[Chunk]) -> int:
    found = 0
    for start in range(0, len(chunks), LOOKUP_BATCH):
        part = chunks[start : start + LOOKUP_BATCH]
        hits = cache.lookup([c.content_hash for c in part])
        found += sum(1 for c in part if c.content_hash in hits)
    return found


def _estimate_time(plan: RebuildPlan, fingerprint: str) -> None:
    """Chunks per second of the jobs that embedded with this model here (their embedded
    chunks over their running time, parsing and writing included)."""
    jobs = IngestionJob.objects.filter(
        generation__embedder_fingerprint=fingerprint,
        status=IngestionJob.Status.SUCCEEDED,
        embedded__gte=MIN_RATE_CHUNKS,
        started_at__isnull=False,
        finished_at__isnull=False,
    ).order_by("-finished_at")[:20]
    embedded = 0
    seconds = 0.0
    for job in jobs:
        embedded += job.embedded
        seconds += (job.finished_at - job.started_at).total_seconds()  # type: ignore[operator]
    if not embedded or seconds <= 0:
        plan.rate_basis = "no job has embedded with this model here yet"
        plan.eta_seconds = 0.0 if plan.to_embed == 0 else None
        return
    plan.rate_chunks_per_s = embedded / seconds
    plan.rate_basis = f"{embedded:,} chunks embedded by {len(jobs)} job(s) with this model here"
    plan.eta_seconds = plan.to_embed / plan.rate_chunks_per_s


def _estimate_disk(plan: RebuildPlan, active: Generation, dimensions: int, text_bytes: int) -> None:
    """The active generation's bytes per chunk, less its vectors, scaled by the new
    chunks' text; plus the new vectors (4 bytes a dimension)."""
    size = generation_size_on_disk(active)
    count = (
        active.chunk_count
        or Document.objects.filter(
            knowledge_base_id=active.knowledge_base_id, status=Document.Status.INDEXED
        ).aggregate(n=Sum(F("chunk_count")))["n"]
    )
    sample = generation_store(active).vectors.sample(SAMPLE_ROWS, columns=["text"])
    if not size or not count or not sample:
        plan.disk_basis = "no local generation to measure from"
        return
    sample_text = sum(len(str(r["text"]).encode()) for r in sample) / len(sample)
    per_text_byte = max(0.0, size / count - active.dimensions * 4) / max(sample_text, 1.0)
    plan.disk_bytes = int(plan.chunks * dimensions * 4 + text_bytes * per_text_byte)
    plan.disk_basis = (
        f"generation #{active.number}: {size / count:,.0f} bytes a chunk, "
        f"{per_text_byte:.1f} bytes of index a byte of text"
    )
