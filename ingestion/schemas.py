from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Schema
from pydantic import ConfigDict, Field, StrictBool

from knowledge_bases.schemas import DocumentOut, DuplicateOut, RejectedOut
from ragstudio.core.bounds import SOURCE_SCHEDULE_MINUTES
from ragstudio.core.vocabulary import SourceKind
from ragstudio.schemas import JSON_INTEGER, JsonInt, within


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


class JobFailureOut(Schema):
    document_id: int
    name: str
    error: str


class JobOut(Schema):
    id: int
    knowledge_base: str
    generation: int
    kind: str
    status: str
    total: int
    total_known: bool = Field(
        description="Every document has been chunked: total will not grow (no ETA before)."
    )
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
    failures: list[JobFailureOut] = Field(
        description="The documents that failed in this job and why (the first 200)."
    )
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


class SourceIn(Schema):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    kind: SourceKind = Field(description="folder, s3, web or git")
    config: dict[str, Any] = Field(
        description="The kind's settings. folder: `path`, `include` (shell patterns, "
        "`*` crosses folders). s3: `uri` (s3://bucket/prefix), `endpoint`, `region`, "
        "`access_key_env` and `secret_key_env` (names of environment variables: secrets "
        "are never stored), `include`. web: `urls` and/or `sitemap`. git: `repository` (a "
        "path under an allowed folder, or an https URL), `branch`, `include`."
    )
    schedule_minutes: JsonInt = Field(
        60,
        ge=SOURCE_SCHEDULE_MINUTES.low,
        le=SOURCE_SCHEDULE_MINUTES.high,
        description="Minutes between syncs (0: only when asked).",
    )
    delete_missing: StrictBool = Field(
        True, description="Delete the documents of files removed at the source (else keep)."
    )


class SourceUpdateIn(Schema):
    model_config = ConfigDict(extra="forbid")
    schedule_minutes: Annotated[int, within(SOURCE_SCHEDULE_MINUTES), JSON_INTEGER] | None = None
    delete_missing: StrictBool | None = None
    enabled: StrictBool | None = None


class SourceOut(Schema):
    id: int
    name: str
    kind: str
    config: dict[str, Any]
    schedule_minutes: int
    delete_missing: bool
    enabled: bool
    status: str = Field(description="never, running, ok or failed")
    last_sync_at: datetime | None
    next_sync_at: datetime | None
    last_stats: dict[str, Any] = Field(
        description="Of the last sync: seen, added, changed, unchanged, removed, kept, "
        "failed (and the failures), job, seconds."
    )
    last_error: str
