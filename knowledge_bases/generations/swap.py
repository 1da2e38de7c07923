"""Promote and roll back: which generation serves. One rule decides whether an action is
allowed and why not (``promote_verdict``, ``rollback_verdict``); the services enforce it
and the pages, the admin and the CLI show the same reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from ingestion.models import IngestionJob
from knowledge_bases.generations import states
from knowledge_bases.generations.check import quality_summary
from knowledge_bases.generations.storage import generation_store
from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.core.errors import Conflict, NotFound, ValidationError

S = Generation.Status


def _writer_blocker(kb: KnowledgeBase) -> str:
    """The rule between swaps and ingestion: a generation stops serving only when no job
    writes to it. A job queued or running on the active generation would index its
    documents into a generation that no longer serves (and mark them indexed), so a swap
    waits for it; uploads made after the swap go to the new generation."""
    if kb.active_generation_id is None:
        return ""
    job = (
        IngestionJob.objects.filter(
            generation_id=kb.active_generation_id, status__in=IngestionJob.LIVE
        )
        .order_by("pk")
        .first()
    )
    if job is None:
        return ""
    return (
        f"job {job.pk} is {job.status} and still writes into the active generation "
        f"#{kb.active_generation.number}: try again when it has finished"  # type: ignore[union-attr]
    )


@dataclass(frozen=True)
class Verdict:
    """Whether a promote or rollback may happen: the generation it would activate, or
    why it cannot (``blocker``, a phrase for people)."""

    target: Generation | None
    blocker: str = ""
    # The only thing in the way is the quality gate: people who may change the KB can
    # promote anyway, with a reason (recorded in the generation's events).
    quality_regression: bool = False

    @property
    def allowed(self) -> bool:
        return not self.blocker


@dataclass(frozen=True)
class Activation:
    """A generation that now serves, and the documents it lacks: the caller indexes them
    into it (a job), so nothing uploaded is lost by a swap."""

    generation: Generation
    requeue: list[Document] = field(default_factory=list)


def promote_verdict(
    kb: KnowledgeBase, generation: Generation, *, override_quality: str = ""
) -> Verdict:
    if generation.status == S.ACTIVE:
        return Verdict(None, "it is already active")
    if generation.status == S.BUILDING:
        return Verdict(None, "it is still building")
    if generation.status == S.FAILED:
        return Verdict(None, "its build failed")
    if generation.status == S.COLLECTED:
        return Verdict(None, "it was collected: its files are deleted")
    if generation.check_passed is False:
        failed = [i["detail"] for i in generation.check_report if not i["ok"]]
        return Verdict(None, "it did not pass its check: " + ("; ".join(failed) or "see report"))
    if generation.status == S.READY and generation.check_passed is None:
        return Verdict(None, "it has not been checked yet")
    if generation.quality_passed is False and not override_quality.strip():
        summary = quality_summary(generation.quality_report) or "see its quality report"
        return Verdict(
            None,
            f"quality regression against the active generation: {summary}",
            quality_regression=True,
        )
    if blocker := _writer_blocker(kb):
        return Verdict(None, blocker)
    return Verdict(generation)


def rollback_verdict(kb: KnowledgeBase) -> Verdict:
    """One step back: the newest archived generation older than the active one."""
    active = kb.active_generation
    if active is None:
        return Verdict(None, "nothing to roll back: there is no active generation")
    target = (
        kb.generations.filter(status=S.ARCHIVED, number__lt=active.number)
        .order_by("-number")
        .first()
    )
    if target is None:
        return Verdict(
            None, f"nothing to roll back to: no archived generation older than #{active.number}"
        )
    if blocker := _writer_blocker(kb):
        return Verdict(None, blocker)
    return Verdict(target)


def locked_kb(kb: KnowledgeBase) -> KnowledgeBase:
    return KnowledgeBase.objects.select_for_update().get(pk=kb.pk)


OVERRIDE_MAX_CHARS = 400


@transaction.atomic
def generation_promote(
    *, kb: KnowledgeBase, number: int, actor: Any = None, override_quality: str = ""
) -> Activation:
    """Activate a ready (checked) or archived generation. One that failed the quality
    gate needs ``override_quality``, the reason, recorded with who gave it; 409 with the
    metrics otherwise."""
    reason = " ".join(override_quality.split())
    if len(reason) > OVERRIDE_MAX_CHARS:
        raise ValidationError(
            f"the override reason must be at most {OVERRIDE_MAX_CHARS} characters",
            {"field": "override_quality"},
        )
    kb = locked_kb(kb)
    generation = (
        Generation.objects.select_for_update().filter(knowledge_base=kb, number=number).first()
    )
    if generation is None:
        raise NotFound(f"knowledge base {kb.slug!r} has no generation {number}")
    verdict = promote_verdict(kb, generation, override_quality=reason)
    if verdict.target is None:
        extra: dict[str, Any] = {"generation": number}
        if verdict.quality_regression:
            extra["quality"] = generation.quality_report
        raise Conflict(f"generation {number} cannot be promoted: {verdict.blocker}", extra)
    note = "promote"
    if generation.quality_passed is False:
        who = getattr(actor, "username", "") or "the operator (CLI)"
        note = f"promote despite a quality regression, override by {who}: {reason}"
    return _activate(kb, verdict.target, actor, note)


@transaction.atomic
def generation_rollback(*, kb: KnowledgeBase, actor: Any = None) -> Activation:
    kb = locked_kb(kb)
    verdict = rollback_verdict(kb)
    if verdict.target is None:
        raise Conflict(verdict.blocker)
    target = Generation.objects.select_for_update().get(pk=verdict.target.pk)
    return _activate(kb, target, actor, f"rollback from {kb.active_generation.number}")  # type: ignore[union-attr]


def _activate(kb: KnowledgeBase, target: Generation, actor: Any, note: str) -> Activation:
    now = timezone.now()
    current = kb.active_generation
    if current is not None:
        # Archive first: the database allows one active generation per KB.
        states.transition(current, S.ARCHIVED, actor=actor, note=note, now=now)
    states.transition(target, S.ACTIVE, actor=actor, note=note, now=now)
    kb.active_generation = target
    # The KB's settings follow what it serves (a rebuild may have changed them).
    kb.embedder = target.embedder
    kb.embedding_dimensions = target.dimensions
    kb.chunk_size = target.chunk_size
    kb.chunk_overlap = target.chunk_overlap
    kb.save(
        update_fields=[
            "active_generation",
            "embedder",
            "embedding_dimensions",
            "chunk_size",
            "chunk_overlap",
            "updated_at",
        ]
    )
    return Activation(target, _sync_documents(kb, target))


def _sync_documents(kb: KnowledgeBase, target: Generation) -> list[Document]:
    """Document rows describe the active generation: take the chunk counts from the one now
    serving. Documents it lacks (uploaded after it was built, or rolled back past) go back
    to pending; they are returned for the caller to index into it."""
    store = generation_store(target)
    counts = Counter(r["document_id"] for r in store.vectors.rows(columns=["document_id"]))
    # A document deleted since this generation was built stays deleted: an archived
    # generation still holds its chunks, which would answer with an empty citation.
    existing = set(
        Document.objects.filter(knowledge_base=kb, pk__in=list(counts)).values_list("pk", flat=True)
    )
    deleted = sorted(set(counts) - existing)
    if deleted:
        store.delete_documents(deleted)
    changed: list[Document] = []
    missing: list[Document] = []
    for doc in Document.objects.filter(knowledge_base=kb).only(
        "pk", "status", "chunk_count", "error_message"
    ):
        if counts.get(doc.pk):
            new = (Document.Status.INDEXED, counts[doc.pk], "")
        elif doc.status == Document.Status.FAILED:
            continue
        else:
            new = (Document.Status.PENDING, 0, doc.error_message)
            missing.append(doc)
        if (doc.status, doc.chunk_count, doc.error_message) != new:
            doc.status, doc.chunk_count, doc.error_message = new
            changed.append(doc)
    # One statement per batch, and only for what changed: this runs with the KB row locked.
    Document.objects.bulk_update(
        changed, ["status", "chunk_count", "error_message"], batch_size=500
    )
    return missing
