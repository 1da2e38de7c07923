"""Which document versions of a generation searches may see.

A job writes a document version's rows beside the version that serves, masked (pending);
when the last of them is stored, one transaction unmasks it and masks the version it
replaces (retired), whose rows are deleted afterwards. Searches leave out every masked
version, so no reader finds both versions, neither, or half of one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from knowledge_bases.models import Document, Generation, VersionMask
from ragstudio.core.types import DocumentVersionKey
from ragstudio.env import rag_settings
from search.stores.generation import GenerationStore

K = VersionMask.Kind


def version_masks(generation: Generation) -> list[DocumentVersionKey]:
    """The document versions a search of this generation must leave out (usually none)."""
    return [
        (int(d), int(v))
        for d, v in VersionMask.objects.filter(generation=generation).values_list(
            "document_id", "version"
        )
    ]


def versions_mask(generation: Generation, keys: Iterable[DocumentVersionKey]) -> None:
    """Mask these versions before their rows are written (a version masked already, by
    an earlier attempt, stays masked)."""
    wanted = {(int(d), int(v)) for d, v in keys}
    if not wanted:
        return
    existing = set(
        VersionMask.objects.filter(
            generation=generation, document_id__in={d for d, _v in wanted}
        ).values_list("document_id", "version")
    )
    VersionMask.objects.bulk_create(
        [
            VersionMask(generation=generation, document_id=d, version=v, kind=K.PENDING)
            for d, v in sorted(wanted - existing)
        ],
        ignore_conflicts=True,
    )


@transaction.atomic
def version_show(generation: Generation, document_id: int, version: int, replaces: int = 0) -> None:
    """Every row of the version is stored: it becomes visible, and the version it
    replaces (if any) hidden, in one step as readers see it."""
    VersionMask.objects.filter(
        generation=generation, document_id=document_id, version=version
    ).delete()
    if replaces and replaces != version:
        VersionMask.objects.update_or_create(
            generation=generation,
            document_id=document_id,
            version=replaces,
            defaults={"kind": K.RETIRED, "created_at": timezone.now()},
        )


def _doomed(generation: Generation) -> list[VersionMask]:
    """Masks whose rows can go: versions retired longer ago than the grace period (a
    search that began before the switch may still look for them); pending versions of
    documents deleted since, superseded by a newer upload, or that failed for good."""
    masks = list(VersionMask.objects.filter(generation=generation))
    documents = {
        d.pk: d
        for d in Document.objects.filter(pk__in={m.document_id for m in masks}).only(
            "pk", "version", "status"
        )
    }
    retired_before = timezone.now() - timedelta(seconds=rag_settings()["VERSION_GRACE_SECONDS"])
    doomed = []
    for mask in masks:
        document = documents.get(mask.document_id)
        if mask.kind == K.RETIRED:
            gone = mask.created_at <= retired_before
        else:
            gone = (
                document is None
                or mask.version < document.version
                or (mask.version == document.version and document.status == Document.Status.FAILED)
            )
        if gone:
            doomed.append(mask)
    return doomed


def versions_sweep(generation: Generation, store: GenerationStore) -> int:
    """Delete the rows of versions no search will see again, then their masks; what a
    cancelled or crashed job wrote for a version still to be indexed stays, for its retry
    to reuse. Idempotent: a crash half-way leaves masks the next sweep finishes."""
    doomed = _doomed(generation)
    if not doomed:
        return 0
    store.delete_versions([(m.document_id, m.version) for m in doomed])
    VersionMask.objects.filter(pk__in=[m.pk for m in doomed]).delete()
    return len(doomed)


def version_counts_visible(
    generation: Generation, store: GenerationStore
) -> dict[int, tuple[int, int]]:
    """For each document with visible rows in the generation: (its version, chunks)."""
    hidden = set(version_masks(generation))
    held: dict[int, tuple[int, int]] = {}
    for (document, version), count in store.vectors.version_counts().items():
        if (document, version) in hidden:
            continue
        if document not in held or version > held[document][0]:
            held[document] = (version, count)
    return held


def versions_of_deleted_documents(
    generation: Generation, store: GenerationStore
) -> list[DocumentVersionKey]:
    """The versions a generation holds of documents deleted since it was built (an
    archived generation is a snapshot and keeps them; a search of it must not find them)."""
    held = store.vectors.version_counts()
    existing = set(
        Document.objects.filter(
            knowledge_base_id=generation.knowledge_base_id, pk__in={d for d, _v in held}
        ).values_list("pk", flat=True)
    )
    return sorted(key for key in held if key[0] not in existing)


def rows_visible(generation: Generation, store: GenerationStore) -> int:
    """The rows a search of the generation can find (masked versions left out)."""
    if not VersionMask.objects.filter(generation=generation).exists():
        return store.vectors.count()
    return sum(count for _version, count in version_counts_visible(generation, store).values())


def masks_forget(generation: Generation, document_ids: Sequence[int]) -> None:
    """Forget a generation's masks of documents whose rows were deleted from it."""
    VersionMask.objects.filter(generation=generation, document_id__in=list(document_ids)).delete()
