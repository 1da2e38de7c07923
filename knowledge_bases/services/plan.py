"""The plan of a rebuild, before anything is spent: what changes against the active
generation, how many chunks the new settings make, how many of them already have vectors
by the same model (reused), how many must be embedded, how long that takes at this
installation's rate, and how much disk the generation will take.

The plan runs the rebuild's own pipeline (parsing in the sandbox, chunking, reuse by
content hash, token-aware batching) with a stand-in for the model that embeds nothing and
a sink that writes nothing, so it counts what the rebuild will do and cannot drift from
it."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ingestion.embedders import LOCAL_PROVIDERS, parse_spec
from ingestion.models import IngestionJob
from ingestion.pipeline.batching import make_batches
from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.runner import run_pipeline
from knowledge_bases.generations import (
    build_config,
    document_sources,
    embedder_get,
    generation_size_on_disk,
    generation_store,
    language_resolve,
    rebuild_settings_resolve,
    reuse_cache,
)
from knowledge_bases.models import Document, Generation, KnowledgeBase, RebuildPlanRun
from ragstudio.core.errors import Conflict, NotFound, RagStudioError, TooManyRequests
from ragstudio.core.types import (
    Chunk,
    DocumentVersionKey,
    EmbeddedChunk,
    Embedder,
    Matrix,
    Section,
    StreamingEmbedder,
    TokenCounter,
)
from ragstudio.env import rag_settings

TIMED_CHUNKS = 96  # chunks a local model is timed on, for the ETA
SAMPLE_ROWS = 200  # rows of the active generation whose text sizes the disk estimate
MIN_RATE_CHUNKS = 50  # a job that embedded fewer says little about the rate

log = logging.getLogger(__name__)


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
    language: str | None = None,
    pause: Callable[[], None] | None = None,
) -> RebuildPlan:
    """What ``generation_rebuild_start`` with these settings would do; nothing is
    embedded or written (here and now: the command line; the web queues a
    ``RebuildPlanRun`` for a worker instead)."""
    started = time.perf_counter()
    kb.refresh_from_db()
    active = kb.active_generation
    if active is None:
        raise Conflict("this knowledge base has no active generation yet: ingest documents first")
    built = rebuild_settings_resolve(
        kb=kb, embedder=embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap, actor=user
    )
    _setting, resolved_language = language_resolve(kb, language)
    model = embedder_get(built.embedder)
    documents = list(Document.objects.filter(knowledge_base=kb).order_by("pk"))
    tokens: dict[str, int] = {}
    stand_in = _StandInModel(model, tokens)
    sink = _DryRunSink(tokens)
    result = run_pipeline(
        documents=document_sources(documents),
        embedder=stand_in,
        store=sink,
        chunker=_NotingChunker(
            model.tokenizer, size=built.chunk_size, overlap=built.chunk_overlap, tokens=tokens
        ),
        config=build_config(),
        vector_cache=reuse_cache(kb.pk, model.fingerprint),
        pause=pause,
    )
    names = {d.pk: d.original_filename for d in documents}
    plan = RebuildPlan(
        settings=[
            SettingChange("embedder", active.embedder, built.embedder),
            SettingChange("fingerprint", active.embedder_fingerprint, model.fingerprint),
            SettingChange("dimensions", active.dimensions, built.dimensions),
            SettingChange("chunk_size", active.chunk_size, built.chunk_size),
            SettingChange("chunk_overlap", active.chunk_overlap, built.chunk_overlap),
            SettingChange("language", active.language, resolved_language),
        ],
        documents=len(documents),
        chunks=result.chunks,
        reused=result.skipped,
        to_embed=result.embedded,
        failed=[
            {"document_id": pk, "filename": names.get(pk, ""), "reason": reason}
            for pk, reason in sorted(result.failed.items())
        ],
    )
    if parse_spec(built.embedder).provider in LOCAL_PROVIDERS and stand_in.sample:
        _time_model(plan, model, stand_in)
    else:
        _estimate_time(plan, model.fingerprint, stand_in.tokens)
    _estimate_disk(plan, kb, built.dimensions, sink.text_bytes)
    plan.seconds = time.perf_counter() - started
    return plan


PLAN_OPTIONS = ("embedder", "chunk_size", "chunk_overlap", "language")
# Plans one user may have queued or running at once (a plan reads every document).
USER_LIVE_PLANS = 2


def rebuild_plan_request(
    *,
    kb: KnowledgeBase,
    user: Any = None,
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    language: str | None = None,
    enqueue: bool = True,
) -> RebuildPlanRun:
    """Queue a plan for a worker (the API and the page: planning reads every document).
    The settings are checked now (422) and the KB must have an active generation (409).
    The same settings asked again while their plan is queued or running get that plan; a
    user has at most USER_LIVE_PLANS live (429)."""
    kb.refresh_from_db()
    if kb.active_generation_id is None:
        raise Conflict("this knowledge base has no active generation yet: ingest documents first")
    rebuild_settings_resolve(
        kb=kb, embedder=embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap, actor=user
    )
    language_resolve(kb, language)
    options = {
        "embedder": embedder,
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "language": language,
    }
    person = user if getattr(user, "pk", None) else None
    with transaction.atomic():
        KnowledgeBase.objects.select_for_update().filter(pk=kb.pk).first()
        live = RebuildPlanRun.objects.filter(status__in=RebuildPlanRun.LIVE)
        for run in live.filter(knowledge_base=kb, created_by=person):
            if run.options == options:
                return run
        if person is not None and not person.is_staff:
            mine = live.filter(created_by=person).count()
            if mine >= USER_LIVE_PLANS:
                raise TooManyRequests(
                    f"you have {mine} rebuild plans being computed: try again when one is ready",
                    retry_after=rag_settings()["USER_LIMIT_RETRY_SECONDS"],
                    extra={"limit": "plans", "max": USER_LIVE_PLANS},
                )
        run = RebuildPlanRun.objects.create(
            knowledge_base=kb, options=options, documents=kb.documents.count(), created_by=person
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _enqueue(plan_id: int) -> None:
    from django_q.tasks import async_task

    async_task(
        "knowledge_bases.tasks.run_rebuild_plan",
        plan_id,
        task_name=f"plan-{plan_id}",
        group="plans",
    )


def rebuild_plan_execute(plan_id: int, *, pause: Callable[[], None] | None = None) -> str:
    """The worker's part: compute a queued plan (a second delivery finds it taken and
    does nothing). Returns the final status."""
    claimed = RebuildPlanRun.objects.filter(pk=plan_id, status=RebuildPlanRun.Status.QUEUED).update(
        status=RebuildPlanRun.Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return "taken"
    run = RebuildPlanRun.objects.select_related("knowledge_base", "created_by").get(pk=plan_id)
    fields: dict[str, Any]
    try:
        options = {k: run.options.get(k) for k in PLAN_OPTIONS}
        plan = generation_rebuild_plan(
            kb=run.knowledge_base, user=run.created_by, pause=pause, **options
        )
        fields = {"status": RebuildPlanRun.Status.SUCCEEDED, "plan": asdict(plan)}
    except RagStudioError as exc:
        fields = {"status": RebuildPlanRun.Status.FAILED, "error_message": exc.message}
    except Exception as exc:
        log.exception("rebuild plan %s failed", plan_id)
        fields = {
            "status": RebuildPlanRun.Status.FAILED,
            "error_message": f"internal error: {type(exc).__name__}: {exc}",
        }
    RebuildPlanRun.objects.filter(pk=plan_id).update(finished_at=timezone.now(), **fields)
    return str(fields["status"])


def rebuild_plan_get(*, kb: KnowledgeBase, plan_id: int) -> RebuildPlanRun:
    run = RebuildPlanRun.objects.filter(knowledge_base=kb, pk=plan_id).first()
    if run is None:
        raise NotFound(f"knowledge base {kb.slug!r} has no rebuild plan {plan_id}")
    return run


def rebuild_plan_of(run: RebuildPlanRun) -> RebuildPlan | None:
    """The plan a run computed (None until it has)."""
    if run.status != RebuildPlanRun.Status.SUCCEEDED or not run.plan:
        return None
    values = dict(run.plan)
    changes = [SettingChange(**change) for change in values.pop("settings", [])]
    known = {f.name for f in fields(RebuildPlan)}
    return RebuildPlan(settings=changes, **{k: v for k, v in values.items() if k in known})


def rebuild_plans_prune(now: datetime | None = None) -> int:
    """Hourly: plans a worker will not finish fail (running past the task timeout, queued
    for a day); plans finished a day ago go (they describe documents as they were)."""
    now = now or timezone.now()
    S = RebuildPlanRun.Status
    RebuildPlanRun.objects.filter(
        Q(status=S.RUNNING, started_at__lt=now - timedelta(seconds=settings.Q_CLUSTER["timeout"]))
        | Q(status=S.QUEUED, created_at__lt=now - timedelta(days=1))
    ).update(
        status=S.FAILED,
        finished_at=now,
        error_message="the worker stopped before it finished: plan again",
    )
    deleted, _ = RebuildPlanRun.objects.filter(finished_at__lt=now - timedelta(days=1)).delete()
    return deleted


class _NotingChunker(Chunker):
    """The rebuild's chunker, noting each chunk's token count by its text for the stand-in
    model (which is handed texts only), so nothing is tokenized twice."""

    def __init__(
        self, counter: TokenCounter, *, size: int, overlap: int, tokens: dict[str, int]
    ) -> None:
        super().__init__(counter, size=size, overlap=overlap)
        self.tokens = tokens

    def chunk(
        self, document_id: int, sections: Sequence[Section], *, title: str = "", version: int = 1
    ) -> list[Chunk]:
        chunks = super().chunk(document_id, sections, title=title, version=version)
        for chunk in chunks:
            self.tokens[chunk.text] = chunk.token_count
        return chunks


class _StandInModel:
    """The model as the pipeline sees it, minus the embedding: it is handed the batches a
    rebuild would send, counts their tokens as the model would compute them (padded to
    each batch's longest), keeps a random sample of their texts to time the real model
    on, and answers zero vectors."""

    def __init__(self, model: Embedder, tokens: dict[str, int]) -> None:
        self.model = model
        self.spec = model.spec
        self.fingerprint = model.fingerprint
        self.dimensions = model.dimensions
        self.max_input_tokens = model.max_input_tokens
        self.max_batch_items = model.max_batch_items
        self.max_batch_tokens = model.max_batch_tokens
        self.noted = tokens
        self.tokens = 0
        self.padded = 0
        self.sample: list[tuple[str, int]] = []
        self._seen = 0
        self._rng = random.Random(0)

    @property
    def tokenizer(self) -> TokenCounter:
        return self.model.tokenizer

    def _count(self, text: str) -> int:
        found = self.noted.get(text)
        return found if found is not None else self.model.tokenizer.count([text])[0]

    def embed_batch(self, texts: Sequence[str], *, on_retry: Any = None) -> Matrix:
        import numpy as np

        counts = [self._count(t) for t in texts]
        self.tokens += sum(counts)
        self.padded += len(texts) * max(1, *counts)
        for item in zip(texts, counts, strict=True):
            self._seen += 1
            if len(self.sample) < TIMED_CHUNKS:
                self.sample.append(item)
            elif (slot := self._rng.randrange(self._seen)) < TIMED_CHUNKS:
                self.sample[slot] = item
        return np.zeros((len(texts), self.dimensions), dtype=np.float32)


class _DryRunSink:
    """Where the rows would go: it only measures their text."""

    def __init__(self, tokens: dict[str, int]) -> None:
        self.noted = tokens
        self.text_bytes = 0

    def write(self, rows: Sequence[EmbeddedChunk]) -> None:
        for row in rows:
            self.text_bytes += len(row.chunk.text.encode())
            self.noted.pop(row.chunk.text, None)  # batched already: no longer needed

    def delete_versions(self, keys: Sequence[DocumentVersionKey]) -> None:
        pass


def _time_model(plan: RebuildPlan, model: Embedder, stand_in: _StandInModel) -> None:
    """A local model's speed, measured now on a sample of the chunks to embed, batched as
    the pipeline batches them (a second or two), in padded tokens a second, applied to the
    padded tokens of every batch the rebuild will send."""
    sample = [
        Chunk(id=str(i), document_id=0, ordinal=i, text=text, content_hash="", token_count=n)
        for i, (text, n) in enumerate(stand_in.sample)
    ]
    max_items = min(build_config().embed_batch_size, model.max_batch_items)
    batches = list(make_batches(sample, max_items=max_items, max_tokens=model.max_batch_tokens))
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
    plan.eta_seconds = stand_in.padded / per_second


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
