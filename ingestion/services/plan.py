"""The plan of a rebuild, before anything is spent: what changes against the active
generation, how many chunks the new settings make (chunked for real: parsing and chunking
are cheap next to embedding), how many of them already have vectors by the same model
(reused, as the rebuild would find them), how many must be embedded, how long that takes
at this installation's measured rate, and how much disk the generation will take."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from ingestion.embedders import LOCAL_PROVIDERS, parse_spec
from ingestion.models import IngestionJob
from ingestion.pipeline.batching import make_batches
from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.parse import parse_document
from ingestion.pipeline.sandbox import ParseSandbox
from ingestion.pipeline.types import Chunk, DocumentError, Embedder, StreamingEmbedder
from knowledge_bases.build_settings import rebuild_settings_resolve
from knowledge_bases.engines import document_read, embedder_get, generation_store
from knowledge_bases.models import Document, Generation, KnowledgeBase
from knowledge_bases.selectors import generation_size_on_disk
from ragstudio.env import rag_settings
from ragstudio.errors import Conflict
from search.stores.generation import CompositeCache

LOOKUP_BATCH = 1000
TIMED_CHUNKS = 96  # chunks a local model is timed on, for the ETA
BATCH_WINDOW = 1024  # as ingestion.pipeline.batching.make_batches sorts them
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
    built = rebuild_settings_resolve(
        kb=kb, embedder=embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap, actor=user
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
    tokens_to_embed = 0
    fresh_tokens: list[int] = []  # token counts of the chunks to embed, in order
    sample: list[Chunk] = []  # chunks to time the model on (a reservoir of the fresh ones)
    seen_fresh = 0
    rng = random.Random(0)
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
            fresh = _to_embed(cache, chunks)
            plan.reused += len(chunks) - len(fresh)
            tokens_to_embed += sum(c.token_count for c in fresh)
            fresh_tokens.extend(c.token_count for c in fresh)
            for chunk in fresh:
                seen_fresh += 1
                if len(sample) < TIMED_CHUNKS:
                    sample.append(chunk)
                elif (slot := rng.randrange(seen_fresh)) < TIMED_CHUNKS:
                    sample[slot] = chunk
            text_bytes += sum(len(c.text.encode()) for c in chunks)
    finally:
        if sandbox is not None:
            sandbox.close()
    plan.to_embed = plan.chunks - plan.reused
    if parse_spec(built.embedder).provider in LOCAL_PROVIDERS and sample:
        _time_model(plan, model, sample, fresh_tokens)
    else:
        _estimate_time(plan, model.fingerprint, tokens_to_embed)
    _estimate_disk(plan, kb, built.dimensions, text_bytes)
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
        data = document_read(document.storage_path)
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


def _to_embed(cache: CompositeCache, chunks: Sequence[Chunk]) -> list[Chunk]:
    """The chunks whose text has no stored vector by the same model."""
    missing: list[Chunk] = []
    for start in range(0, len(chunks), LOOKUP_BATCH):
        part = chunks[start : start + LOOKUP_BATCH]
        hits = cache.lookup([c.content_hash for c in part])
        missing.extend(c for c in part if c.content_hash not in hits)
    return missing


def _batch_sizes(model: Embedder) -> tuple[int, int]:
    return (
        min(rag_settings()["EMBED_BATCH_SIZE"], model.max_batch_items),
        model.max_batch_tokens,
    )


def _padded_tokens(token_counts: Sequence[int], model: Embedder) -> int:
    """The tokens the model computes for these chunks, padding included, batched as the
    pipeline batches them (sorted by length in windows; ingestion/pipeline/batching.py)."""
    max_items, max_tokens = _batch_sizes(model)
    total = 0
    for start in range(0, len(token_counts), BATCH_WINDOW):
        batch = longest = 0
        for tokens in sorted(token_counts[start : start + BATCH_WINDOW]):
            tokens = max(tokens, 1)
            if batch and (batch >= max_items or (batch + 1) * max(longest, tokens) > max_tokens):
                total += batch * longest
                batch = longest = 0
            batch += 1
            longest = max(longest, tokens)
        total += batch * longest
    return total


def _time_model(
    plan: RebuildPlan, model: Embedder, sample: Sequence[Chunk], token_counts: Sequence[int]
) -> None:
    """A local model's speed, measured now on a sample of the chunks to embed, given to it
    as the pipeline gives them (a second or two), in padded tokens a second, applied to
    the padded tokens of all the chunks to embed."""
    max_items, max_tokens = _batch_sizes(model)
    batches = list(make_batches(sample, max_items=max_items, max_tokens=max_tokens))
    model.embed_batch([sample[0].text, sample[-1].text])  # the first call allocates
    started = time.perf_counter()
    if isinstance(model, StreamingEmbedder):  # local-fast: the pipeline streams to it
        for _ in model.embed_stream((c.text, c.token_count) for c in sample):
            pass
    else:
        for batch in batches:
            model.embed_batch([c.text for c in batch])
    seconds = time.perf_counter() - started
    padded = sum(len(b) * max(max(c.token_count, 1) for c in b) for b in batches)
    if seconds <= 0 or padded <= 0:
        return
    per_second = padded / seconds
    plan.rate_chunks_per_s = len(sample) / seconds
    plan.rate_basis = (
        f"timed now on {len(sample)} of the chunks to embed: {per_second:,.0f} tokens/s"
    )
    plan.eta_seconds = _padded_tokens(token_counts, model) / per_second


def _mean_tokens(generation: Generation, cache: dict[int, float]) -> float:
    """Tokens a chunk of this generation (from a sample of its rows)."""
    if generation.pk not in cache:
        rows = generation_store(generation).vectors.sample(SAMPLE_ROWS, columns=["token_count"])
        counts = [int(r["token_count"] or 0) for r in rows]
        cache[generation.pk] = sum(counts) / len(counts) if counts else 0.0
    return cache[generation.pk]


def _estimate_time(plan: RebuildPlan, fingerprint: str, tokens: int) -> None:
    """A remote model's speed here (timing it would cost requests), in tokens a second:
    the tokens the jobs that embedded with this model processed, over their running time,
    applied to the tokens to embed."""
    jobs = IngestionJob.objects.filter(
        generation__embedder_fingerprint=fingerprint,
        status=IngestionJob.Status.SUCCEEDED,
        embedded__gte=MIN_RATE_CHUNKS,
        started_at__isnull=False,
        finished_at__isnull=False,
    ).order_by("-finished_at")[:20]
    embedded = 0
    done_tokens = 0.0
    seconds = 0.0
    sizes: dict[int, float] = {}
    for job in jobs.select_related("generation"):
        if job.generation.files_deleted_at is not None:
            continue
        embedded += job.embedded
        done_tokens += job.embedded * _mean_tokens(job.generation, sizes)
        seconds += (job.finished_at - job.started_at).total_seconds()  # type: ignore[operator]
    if plan.to_embed == 0:
        plan.eta_seconds = 0.0
    if not embedded or seconds <= 0 or done_tokens <= 0:
        plan.rate_basis = "no job has embedded with this model here yet"
        return
    plan.rate_chunks_per_s = embedded / seconds
    plan.rate_basis = (
        f"{embedded:,} chunks ({done_tokens / seconds:,.0f} tokens/s) embedded by "
        f"{len(sizes)} generation(s) of this model here"
    )
    if plan.to_embed:
        plan.eta_seconds = tokens / (done_tokens / seconds)


def _estimate_disk(plan: RebuildPlan, kb: KnowledgeBase, dimensions: int, text_bytes: int) -> None:
    """Bytes a byte of chunk text takes beside its vector, from the KB's most compact
    generation on disk (the active one may carry versions of many small writes), applied
    to the new chunks' text; plus the new vectors (4 bytes a dimension)."""
    best: tuple[float, Generation] | None = None
    for generation in kb.generations.filter(
        files_deleted_at__isnull=True, status__in=Generation.SEARCHABLE, chunk_count__gt=0
    ):
        size = generation_size_on_disk(generation, stored=True)
        sample = generation_store(generation).vectors.sample(SAMPLE_ROWS, columns=["text"])
        if not size or not sample:
            continue
        mean_text = sum(len(str(r["text"]).encode()) for r in sample) / len(sample)
        per_text_byte = max(0.0, size / generation.chunk_count - generation.dimensions * 4) / max(
            mean_text, 1.0
        )
        if best is None or per_text_byte < best[0]:
            best = (per_text_byte, generation)
    if best is None:
        plan.disk_basis = "no local generation to measure from"
        return
    per_text_byte, generation = best
    plan.disk_bytes = int(plan.chunks * dimensions * 4 + text_bytes * per_text_byte)
    plan.disk_basis = (
        f"generation #{generation.number}: {per_text_byte:.1f} bytes of tables and indexes "
        "a byte of text, beside the vectors"
    )
