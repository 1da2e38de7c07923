"""Promote and roll back: which generation serves. One rule decides whether an action is
allowed and why not (``promote_verdict``, ``rollback_verdict``); the services enforce it
and the pages, the admin and the CLI show the same reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from ingestion.models import IngestionJob
from knowledge_bases.generations import states
from knowledge_bases.generations.check import quality_summary
from knowledge_bases.generations.storage import generation_store
from knowledge_bases.generations.versions import masks_forget, version_counts_visible
from knowledge_bases.models import Document, DocumentVersion, Generation, KnowledgeBase
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
    # Documents that went back to the version this generation was built with (a rollback).
    reverted: list[Document] = field(default_factory=list)


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


def rollback_candidate(kb: KnowledgeBase) -> tuple[Generation | None, list[int]]:
    """The generation the last promote replaced (skipping any collected since), and the
    stack as it is once a rollback has returned to it."""
    stack = [pk for pk in kb.rollback_stack if isinstance(pk, int)]
    archived = {g.pk: g for g in kb.generations.filter(pk__in=stack, status=S.ARCHIVED)}
    while stack:
        pk = stack.pop()
        if pk in archived:
            return archived[pk], stack
    return None, []


def rollback_verdict(kb: KnowledgeBase) -> Verdict:
    """Undo the last promote: the generation it replaced (promote #2 over #3, and a
    rollback returns to #3); then the one before that, and so on."""
    active = kb.active_generation
    if active is None:
        return Verdict(None, "nothing to roll back: there is no active generation")
    target, _rest = rollback_candidate(kb)
    if target is None:
        return Verdict(
            None,
            f"nothing to roll back to: no promote replaced a generation still kept "
            f"before #{active.number}",
        )
    if blocker := _writer_blocker(kb):
        return Verdict(None, blocker)
    return Verdict(target)


def locked_kb(kb: KnowledgeBase) -> KnowledgeBase:
    return KnowledgeBase.objects.select_for_update().get(pk=kb.pk)


OVERRIDE_MAX_CHARS = 400
ROLLBACK_STACK_MAX = 100  # promotes remembered; generations past retention drop out anyway


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
    return _activate(kb, verdict.target, actor, note, rollback=False)


@transaction.atomic
def generation_rollback(*, kb: KnowledgeBase, actor: Any = None) -> Activation:
    kb = locked_kb(kb)
    verdict = rollback_verdict(kb)
    if verdict.target is None:
        raise Conflict(verdict.blocker)
    target = Generation.objects.select_for_update().get(pk=verdict.target.pk)
    _target, kb.rollback_stack = rollback_candidate(kb)
    note = f"rollback from {kb.active_generation.number}"  # type: ignore[union-attr]
    return _activate(kb, target, actor, note, rollback=True)


def _activate(
    kb: KnowledgeBase, target: Generation, actor: Any, note: str, *, rollback: bool
) -> Activation:
    now = timezone.now()
    current = kb.active_generation
    if current is not None and not rollback:
        kb.rollback_stack = [*kb.rollback_stack, current.pk][-ROLLBACK_STACK_MAX:]
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
    kb.language = target.language_setting
    kb.save(
        update_fields=[
            "active_generation",
            "rollback_stack",
            "embedder",
            "embedding_dimensions",
            "chunk_size",
            "chunk_overlap",
            "language",
            "updated_at",
        ]
    )
    requeue, reverted = _sync_documents(kb, target, rollback=rollback)
    return Activation(target, requeue, reverted)


DOCUMENT_STATE = ["status", "chunk_count", "error_message", "serving_version"]
FILE_FIELDS = ["version", "sha256", "size", "content_type", "storage_path", "original_filename"]


def _sync_documents(
    kb: KnowledgeBase, target: Generation, *, rollback: bool
) -> tuple[list[Document], list[Document]]:
    """Document rows describe the active generation: take each document's version and
    chunk count from the one now serving. A rollback brings back the versions that
    generation was built with (returned second); after a promote, a document it holds in
    an older version serves that one until its latest is indexed into it. Documents it
    lacks (uploaded after it was built, or rolled back past) go back to pending. The
    documents to index into it are returned first, for the caller to queue."""
    store = generation_store(target)
    held = version_counts_visible(target, store)
    # A document deleted since this generation was built stays deleted: an archived
    # generation still holds its chunks, which would answer with an empty citation.
    existing = set(
        Document.objects.filter(knowledge_base=kb, pk__in=list(held)).values_list("pk", flat=True)
    )
    deleted = sorted(set(held) - existing)
    if deleted:
        store.delete_documents(deleted)
        masks_forget(target, deleted)
    changed: list[Document] = []
    reverted: list[Document] = []
    missing: list[Document] = []
    for doc in Document.objects.filter(knowledge_base=kb):
        before = [getattr(doc, f) for f in DOCUMENT_STATE + FILE_FIELDS]
        if doc.pk in held:
            version, count = held[doc.pk]
            if version != doc.version and (rollback or version > doc.version):
                _point_at(doc, version)
                reverted.append(doc)
            doc.serving_version, doc.chunk_count = version, count
            if version == doc.version:
                doc.status, doc.error_message = Document.Status.INDEXED, ""
            else:
                doc.status = Document.Status.PENDING
                missing.append(doc)
        elif doc.status == Document.Status.FAILED:
            doc.serving_version, doc.chunk_count = 0, 0
        else:
            doc.status, doc.serving_version, doc.chunk_count = Document.Status.PENDING, 0, 0
            missing.append(doc)
        if [getattr(doc, f) for f in DOCUMENT_STATE + FILE_FIELDS] != before:
            changed.append(doc)
    # One statement per batch, and only for what changed: this runs with the KB row locked.
    Document.objects.bulk_update(changed, DOCUMENT_STATE + FILE_FIELDS, batch_size=500)
    return missing, reverted


def _point_at(doc: Document, number: int) -> None:
    """Make ``number`` the document's current version again (its file and name)."""
    version = DocumentVersion.objects.filter(document=doc, number=number).first()
    if version is None:  # its history is gone: the number alone
        doc.version = number
        return
    doc.version = number
    doc.sha256, doc.size, doc.content_type = version.sha256, version.size, version.content_type
    doc.storage_path, doc.original_filename = version.storage_path, version.original_filename
