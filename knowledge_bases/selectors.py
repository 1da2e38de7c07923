"""Reads, with the access rule in one place: a KB is readable by its owner, by the users it
is shared with and by staff; only its owner and staff may change it."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from ingestion.models import IngestionJob
from knowledge_bases.models import Document, DocumentVersion, KnowledgeBase
from ragstudio.core.errors import Ambiguous, Forbidden, NotFound


def knowledge_bases_visible_to(user: Any) -> QuerySet[KnowledgeBase]:
    qs = KnowledgeBase.objects.select_related("active_generation", "owner")
    if not getattr(user, "is_authenticated", False):
        return qs.none()
    key = getattr(user, "api_key", None)
    if key is not None and getattr(key, "kb_ids", None):
        qs = qs.filter(pk__in=key.kb_ids)  # a key limited to some knowledge bases
    if user.is_staff:
        return qs
    shared = KnowledgeBase.shared_with.through.objects.filter(user=user).values("knowledgebase_id")
    return qs.filter(Q(owner=user) | Q(pk__in=shared))


def knowledge_base_can_change(kb: KnowledgeBase, user: Any) -> bool:
    key = getattr(user, "api_key", None)
    if key is not None and key.read_only:
        return False
    return bool(getattr(user, "is_staff", False)) or (
        kb.owner_id is not None and kb.owner_id == getattr(user, "pk", None)
    )


def _resolve(candidates: QuerySet[KnowledgeBase], ref: str, own_pk: Any) -> KnowledgeBase:
    """The KB ``ref`` names among ``candidates``: ``owner~slug`` names one exactly; a bare
    slug names the viewer's own KB of that slug, else the only one they see."""
    owner, qualified, slug = ref.rpartition(KnowledgeBase.REF_SEPARATOR)
    matches = candidates.filter(slug=slug)
    if qualified:
        matches = (
            matches.filter(owner__username=owner) if owner else matches.filter(owner__isnull=True)
        )
    elif own_pk is not None:
        own = matches.filter(owner_id=own_pk).first()
        if own is not None:
            return own
    found = list(matches.order_by("owner__username")[:5])
    if not found:
        # The same answer whether it does not exist or belongs to someone else.
        raise NotFound(f"knowledge base {ref!r} not found")
    if len(found) > 1:
        names = ", ".join(repr(kb.qualified_ref) for kb in found)
        raise Ambiguous(
            f"more than one knowledge base you can see is called {slug!r}: name it as "
            f"owner~slug ({names})",
            {"candidates": [kb.qualified_ref for kb in found]},
        )
    return found[0]


def knowledge_base_get(*, slug: str, user: Any, change: bool = False) -> KnowledgeBase:
    """The KB ``slug`` (a slug or ``owner~slug``) names if ``user`` may read it (and change
    it, with ``change=True``)."""
    kb = _resolve(knowledge_bases_visible_to(user), slug, getattr(user, "pk", None))
    if change and not knowledge_base_can_change(kb, user):
        raise Forbidden(f"knowledge base {slug!r} is shared with you read-only")
    return kb


def knowledge_base_for_operator(ref: str) -> KnowledgeBase:
    """The KB ``ref`` names for the command line, which sees every KB."""
    return _resolve(
        KnowledgeBase.objects.select_related("active_generation", "owner"), ref, own_pk=None
    )


def knowledge_base_ref(
    kb: KnowledgeBase, user: Any, visible_slugs: Counter[str] | None = None
) -> str:
    """The shortest address of ``kb`` that names it for ``user``: its slug, unless the user
    sees other KBs of that slug and does not own this one (``visible_slugs`` counts the
    slugs the user sees, when the caller has counted them already)."""
    if kb.owner_id is not None and kb.owner_id == getattr(user, "pk", None):
        return kb.slug
    if visible_slugs is None:
        visible_slugs = Counter(
            knowledge_bases_visible_to(user).filter(slug=kb.slug).values_list("slug", flat=True)
        )
    return kb.qualified_ref if visible_slugs[kb.slug] > 1 else kb.slug


def knowledge_bases_with_stats(user: Any) -> QuerySet[KnowledgeBase]:
    last_job = IngestionJob.objects.filter(knowledge_base=OuterRef("pk")).order_by(
        "-created_at", "-id"
    )
    return knowledge_bases_visible_to(user).annotate(
        document_count=Count("documents", distinct=True),
        indexed_count=Count(
            "documents", filter=Q(documents__status=Document.Status.INDEXED), distinct=True
        ),
        last_job_status=Subquery(last_job.values("status")[:1]),
        last_job_id=Subquery(last_job.values("pk")[:1]),
    )


def documents_of(kb: KnowledgeBase) -> QuerySet[Document]:
    """The KB's documents, newest first, with ``version_count``."""
    return kb.documents.annotate(version_count=Count("versions"))


def documents_matching(
    kb: KnowledgeBase,
    *,
    name: str = "",
    uploaded_after: datetime | None = None,
    uploaded_before: datetime | None = None,
) -> QuerySet[Document]:
    """The KB's documents whose title or file name contains ``name`` (any case), uploaded
    within the times given."""
    documents = kb.documents.all()
    if name:
        documents = documents.filter(
            Q(title__icontains=name) | Q(original_filename__icontains=name)
        )
    if uploaded_after is not None:
        documents = documents.filter(created_at__gte=uploaded_after)
    if uploaded_before is not None:
        documents = documents.filter(created_at__lt=uploaded_before)
    return documents


def document_versions(document: Document) -> QuerySet[DocumentVersion]:
    """The document's versions, newest first."""
    return document.versions.select_related("uploaded_by", "document").order_by("-number")
