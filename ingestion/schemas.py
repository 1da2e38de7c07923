from __future__ import annotations

from datetime import datetime

from ninja import Schema
from pydantic import Field

from knowledge_bases.schemas import DocumentOut, DuplicateOut, RejectedOut


class EmbeddingThrottleOut(Schema):
    """A remote embedder's throttle while the job ran (absent for local models)."""

    concurrency: int
    batch_items: int
    requests_per_min: float
    tokens_per_min: int
    rate_cap: float | None = Field(None, description="requests/s learned from 429s")
    throttle_events: int
    throttled_requests: int
    retries: int
    note: str


class JobOut(Schema):
    id: int
    knowledge_base: str
    generation: int
    kind: str
    status: str
    total: int
    embedded: int
    persisted: int
    buffered: int
    skipped: int
    errors: int
    retries: int
    embedding: EmbeddingThrottleOut | None
    documents_total: int
    documents_done: int
    documents_failed: int
    rate: float
    eta_seconds: float | None
    store_batch_size: int
    embed_batch_size: int
    attempts: int
    cancel_requested: bool
    heartbeat_at: datetime | None
    error_message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_knowledge_base(obj: object) -> str:
        return obj.knowledge_base.slug  # type: ignore[attr-defined]

    @staticmethod
    def resolve_embedding(obj: object) -> dict[str, object] | None:
        return getattr(obj, "embedding", None) or None

    @staticmethod
    def resolve_generation(obj: object) -> int:
        return obj.generation.number  # type: ignore[attr-defined]


class UnchangedOut(Schema):
    filename: str
    document_id: int
    version: int


class UploadOut(Schema):
    accepted: list[DocumentOut] = Field(description="New documents.")
    versions: list[DocumentOut] = Field(
        description="New versions of documents with the same name (or external id)."
    )
    unchanged: list[UnchangedOut] = Field(
        description="Files identical to their document's latest version: nothing to do."
    )
    duplicates: list[DuplicateOut]
    rejected: list[RejectedOut]
    job: JobOut | None
