"""The OpenAI vector-stores model over ours: a vector store is a knowledge base, a file
uploaded with `POST /v1/files` is kept as sent, and adding it to a store makes it a
document of that knowledge base (its external id is the file's id). A store file's
status is its document's; its attributes are what search filters."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet, Sum
from django.utils import timezone
from django.utils.text import slugify

from ingestion.services.documents import document_delete
from ingestion.services.uploads import IncomingFile, clean_name, documents_upload, store_stream
from knowledge_bases.generations import (
    document_file_forget,
    document_file_share,
    document_read,
    upload_local_path,
)
from knowledge_bases.models import (
    ApiFile,
    Document,
    KnowledgeBase,
    VectorStoreFile,
    VectorStoreFileBatch,
)
from knowledge_bases.selectors import knowledge_base_can_change, knowledge_bases_visible_to
from knowledge_bases.services import knowledge_base_create, knowledge_base_delete
from ragstudio.core.errors import Conflict, NotFound, ValidationError
from ragstudio.core.text import storable
from ragstudio.core.types import DocumentError

PURPOSES = frozenset({"assistants", "user_data", "batch", "fine-tune", "vision", "evals"})
MAX_ATTRIBUTES = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512
MAX_BATCH_FILES = 2000
_STORE_ID = re.compile(r"^vs_(\d{1,18})$")


# --- files ------------------------------------------------------------------------------


def api_file_create(*, user: Any, name: str, chunks: Iterable[bytes], purpose: str) -> ApiFile:
    if purpose not in PURPOSES:
        raise ValidationError(
            f"purpose must be one of {', '.join(sorted(PURPOSES))}", {"field": "purpose"}
        )
    public_id = ApiFile.new_id()
    storage_path = f"files/{public_id}"
    target = upload_local_path(storage_path)
    try:
        tmp, sha, size = store_stream(chunks, target.parent, settings.RAGSTUDIO_MAX_UPLOAD_BYTES)
    except DocumentError as exc:
        raise ValidationError(str(exc), {"field": "file"}) from None
    if size == 0:
        os.unlink(tmp)
        raise ValidationError("the file is empty", {"field": "file"})
    os.replace(tmp, target)
    document_file_share(storage_path)
    return ApiFile.objects.create(
        public_id=public_id,
        owner=user,
        filename=clean_name(name),
        size=size,
        purpose=purpose,
        sha256=sha,
        storage_path=storage_path,
    )


def api_files_of(user: Any) -> QuerySet[ApiFile]:
    files = ApiFile.objects.all()
    return files if user.is_staff else files.filter(owner=user)


def api_file_get(*, user: Any, file_id: str) -> ApiFile:
    found = api_files_of(user).filter(public_id=file_id).first()
    if found is None:
        raise NotFound(f"No such File object: {file_id}", {"param": "file_id"})
    return found


def api_file_bytes(file: ApiFile) -> bytes:
    try:
        return document_read(file.storage_path)
    except FileNotFoundError:
        raise NotFound(f"the content of {file.public_id} is missing from storage") from None


def api_file_delete(*, user: Any, file_id: str) -> str:
    """Delete a file, and the documents it became in the stores it was added to."""
    file = api_file_get(user=user, file_id=file_id)
    for link in list(file.store_files.select_related("knowledge_base", "document")):
        store_file_remove(kb=link.knowledge_base, link=link)
    document_file_forget(file.storage_path)
    file.delete()
    return file_id


# --- stores ---------------------------------------------------------------------------


def store_id(kb: KnowledgeBase) -> str:
    return f"vs_{kb.pk}"


def vector_stores_of(user: Any) -> QuerySet[KnowledgeBase]:
    return knowledge_bases_visible_to(user)


def vector_store_get(*, user: Any, vector_store_id: str, change: bool = False) -> KnowledgeBase:
    match = _STORE_ID.match(vector_store_id or "")
    kb = vector_stores_of(user).filter(pk=int(match.group(1))).first() if match else None
    if kb is None:
        raise NotFound(
            f"No vector store found with id '{vector_store_id}'.", {"param": "vector_store_id"}
        )
    if change and not knowledge_base_can_change(kb, user):
        raise Conflict(
            "this vector store is shared with you read-only", {"param": "vector_store_id"}
        )
    return kb


def metadata_valid(metadata: Any, field: str = "metadata") -> dict[str, Any]:
    """OpenAI's limits: up to 16 keys of up to 64 characters; values strings (store
    metadata) or strings, numbers and booleans (file attributes) of up to 512 characters."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_ATTRIBUTES:
        raise ValidationError(f"{field} must be an object of at most 16 keys", {"param": field})
    for key, value in metadata.items():
        if isinstance(value, str) and not storable(value):
            raise ValidationError(f"{field}[{key!r}] must be text", {"param": f"{field}.{key}"})
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS or not storable(key):
            raise ValidationError(f"{field} keys are 1 to 64 characters", {"param": field})
        scalar = isinstance(value, str | bool | int | float)
        if field == "metadata" and not isinstance(value, str):
            scalar = False
        if not scalar or (isinstance(value, str) and len(value) > MAX_VALUE_CHARS):
            kinds = "strings" if field == "metadata" else "strings, numbers or booleans"
            raise ValidationError(
                f"{field}[{key!r}] must be one of {kinds} (at most 512 characters)",
                {"param": f"{field}.{key}"},
            )
    return dict(metadata)


def chunking_settings(strategy: Any) -> tuple[int | None, int | None]:
    """(chunk size, overlap) of a chunking_strategy: ours for "auto" (None, None)."""
    if strategy is None or strategy == {"type": "auto"}:
        return None, None
    if not isinstance(strategy, dict) or strategy.get("type") != "static":
        raise ValidationError(
            "chunking_strategy is {'type': 'auto'} or {'type': 'static', 'static': {...}}",
            {"param": "chunking_strategy"},
        )
    static = strategy.get("static") or {}
    size, overlap = static.get("max_chunk_size_tokens"), static.get("chunk_overlap_tokens")
    if not isinstance(size, int) or not 100 <= size <= 4096:
        raise ValidationError(
            "max_chunk_size_tokens must be between 100 and 4096",
            {"param": "chunking_strategy.static.max_chunk_size_tokens"},
        )
    if not isinstance(overlap, int) or not 0 <= overlap <= size // 2:
        raise ValidationError(
            "chunk_overlap_tokens must be between 0 and half of max_chunk_size_tokens",
            {"param": "chunking_strategy.static.chunk_overlap_tokens"},
        )
    return size, overlap


def chunking_check(kb: KnowledgeBase, strategy: Any) -> None:
    """A store's chunking is fixed by its first build: another one is refused."""
    size, overlap = chunking_settings(strategy)
    if size is None:
        return
    if (size, overlap) != (kb.chunk_size, kb.chunk_overlap):
        raise ValidationError(
            f"this vector store chunks at {kb.chunk_size} tokens with {kb.chunk_overlap} "
            "overlap; to change it, rebuild the knowledge base with new chunk settings "
            "(POST /api/kbs/{slug}/generations/rebuild)",
            {"param": "chunking_strategy"},
        )


def _unique_slug(user: Any, name: str) -> str:
    base = (slugify(name)[:50].strip("-") or "store").replace("_", "-")
    taken = set(
        KnowledgeBase.objects.filter(owner=user, slug__startswith=base).values_list(
            "slug", flat=True
        )
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def vector_store_create(
    *,
    user: Any,
    name: str | None,
    description: str = "",
    metadata: Any = None,
    chunking_strategy: Any = None,
) -> KnowledgeBase:
    metadata = metadata_valid(metadata)
    size, overlap = chunking_settings(chunking_strategy)
    label = (name or "").strip() or "Vector store"
    kb = knowledge_base_create(
        slug=_unique_slug(user, label),
        name=label[:200],
        owner=user,
        description=description or "",
        chunk_size=size,
        chunk_overlap=overlap,
    )
    KnowledgeBase.objects.filter(pk=kb.pk).update(metadata=metadata)
    kb.metadata = metadata
    return kb


def vector_store_update(
    *, kb: KnowledgeBase, name: str | None = None, metadata: Any = None
) -> KnowledgeBase:
    fields = ["updated_at"]
    if name is not None:
        if not name.strip() or len(name) > 200:
            raise ValidationError("name must be 1 to 200 characters", {"param": "name"})
        kb.name = name.strip()
        fields.append("name")
    if metadata is not None:
        kb.metadata = metadata_valid(metadata)
        fields.append("metadata")
    kb.save(update_fields=fields)
    return kb


def vector_store_delete(*, kb: KnowledgeBase) -> None:
    knowledge_base_delete(kb=kb)


def store_usage(kb: KnowledgeBase) -> int:
    return int(kb.documents.aggregate(n=Sum("size"))["n"] or 0)


# --- store files ------------------------------------------------------------------------


def store_file_status(link: VectorStoreFile) -> str:
    if link.cancelled:
        return "cancelled"
    if link.document is None:
        return "failed"
    statuses: dict[str, str] = {
        Document.Status.PENDING: "in_progress",
        Document.Status.INDEXED: "completed",
        Document.Status.FAILED: "failed",
    }
    return statuses.get(str(link.document.status), "in_progress")


def store_file_error(link: VectorStoreFile) -> dict[str, str] | None:
    status = store_file_status(link)
    if status != "failed":
        return None
    message = link.error or (link.document.error_message if link.document else "") or "failed"
    code = "unsupported_file" if "unsupported" in message else "invalid_file"
    return {"code": code, "message": message}


def file_counts(links: Iterable[VectorStoreFile]) -> dict[str, int]:
    counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}
    for link in links:
        counts[store_file_status(link)] += 1
        counts["total"] += 1
    return counts


def store_files_of(kb: KnowledgeBase) -> QuerySet[VectorStoreFile]:
    return kb.store_files.select_related("file", "document")


def store_file_get(*, kb: KnowledgeBase, file_id: str) -> VectorStoreFile:
    link = store_files_of(kb).filter(file__public_id=file_id).first()
    if link is None:
        raise NotFound(
            f"No file found with id '{file_id}' in vector store '{store_id(kb)}'.",
            {"param": "file_id"},
        )
    return link


def store_files_add(
    *,
    kb: KnowledgeBase,
    user: Any,
    items: Sequence[tuple[str, Any]],
    batch: VectorStoreFileBatch | None = None,
    chunking_strategy: Any = None,
) -> list[VectorStoreFile]:
    """Add files (by id, with their attributes) to a store: one upload, one job. A file
    already in the store keeps its document (its attributes are replaced)."""
    chunking_check(kb, chunking_strategy)
    if len(items) > MAX_BATCH_FILES:
        raise ValidationError(f"at most {MAX_BATCH_FILES} files at once", {"param": "file_ids"})
    files = []
    for file_id, attributes in items:
        file = api_file_get(user=user, file_id=file_id)
        files.append((file, metadata_valid(attributes, "attributes")))
    incoming = [
        IncomingFile(name=f.filename, chunks=[api_file_bytes(f)], external_id=f.public_id)
        for f, _ in files
    ]
    result = documents_upload(kb=kb, files=incoming, user=user)
    links = []
    with transaction.atomic():
        for index, (file, attributes) in enumerate(files):
            verdict, document, reason = result.verdicts.get(index, ("rejected", None, "not read"))
            error = ""
            if verdict == "duplicate":
                error = f"the same content is already in this vector store ({reason})"
                document = None
            elif verdict == "rejected":
                error = reason
            link, _created = VectorStoreFile.objects.update_or_create(
                knowledge_base=kb,
                file=file,
                defaults={
                    "document": document,
                    "attributes": attributes,
                    "error": error,
                    "batch": batch,
                    "cancelled": False,
                },
            )
            links.append(link)
    return links


def store_file_update(*, link: VectorStoreFile, attributes: Any) -> VectorStoreFile:
    link.attributes = metadata_valid(attributes, "attributes")
    link.save(update_fields=["attributes"])
    return link


def store_file_remove(*, kb: KnowledgeBase, link: VectorStoreFile) -> None:
    """Take a file out of a store: its document goes, the file stays."""
    if link.document is not None:
        document_delete(kb=kb, document_id=link.document.pk)
    link.delete()


def batch_create(
    *, kb: KnowledgeBase, user: Any, items: Sequence[tuple[str, Any]], chunking_strategy: Any
) -> VectorStoreFileBatch:
    if not items:
        raise ValidationError("give file_ids or files", {"param": "file_ids"})
    batch = VectorStoreFileBatch.objects.create(
        public_id=VectorStoreFileBatch.new_id(), knowledge_base=kb
    )
    store_files_add(kb=kb, user=user, items=items, batch=batch, chunking_strategy=chunking_strategy)
    return batch


def batch_get(*, kb: KnowledgeBase, batch_id: str) -> VectorStoreFileBatch:
    batch = kb.file_batches.filter(public_id=batch_id).first()
    if batch is None:
        raise NotFound(f"No file batch found with id '{batch_id}'.", {"param": "batch_id"})
    return batch


def batch_status(batch: VectorStoreFileBatch, counts: dict[str, int]) -> str:
    if batch.cancelled_at is not None:
        return "cancelled" if counts["in_progress"] == 0 else "cancelling"
    if counts["in_progress"]:
        return "in_progress"
    return "failed" if counts["failed"] and not counts["completed"] else "completed"


def batch_cancel(*, batch: VectorStoreFileBatch) -> VectorStoreFileBatch:
    """Files of the batch not yet indexed are marked cancelled (they finish indexing, as
    a job cannot drop one document, but count as cancelled)."""
    if batch.cancelled_at is None:
        batch.cancelled_at = timezone.now()
        batch.save(update_fields=["cancelled_at"])
        pending = [
            link.pk
            for link in batch.files.select_related("document")
            if store_file_status(link) == "in_progress"
        ]
        VectorStoreFile.objects.filter(pk__in=pending).update(cancelled=True)
    return batch
