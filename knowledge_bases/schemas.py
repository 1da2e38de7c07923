from __future__ import annotations

from datetime import datetime

from ninja import Schema
from pydantic import ConfigDict, Field, StrictBool

from knowledge_bases.models import KnowledgeBase
from ragstudio.bounds import CHUNK_OVERLAP, CHUNK_SIZE, EMBED_BATCH_SIZE, STORE_BATCH_SIZE
from ragstudio.schemas import JsonInt


class KnowledgeBaseIn(Schema):
    model_config = ConfigDict(extra="forbid")  # a typo is an error, not a silent default
    slug: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    embedder: str | None = Field(default=None, max_length=255)
    chunk_size: JsonInt | None = Field(default=None, ge=CHUNK_SIZE.low, le=CHUNK_SIZE.high)
    chunk_overlap: JsonInt | None = Field(default=None, ge=CHUNK_OVERLAP.low, le=CHUNK_OVERLAP.high)


class GenerationOut(Schema):
    number: int
    status: str
    active: bool
    embedder: str
    embedder_fingerprint: str
    dimensions: int
    chunk_size: int
    chunk_overlap: int
    chunk_count: int
    check_passed: bool | None
    check_report: list[dict]
    created_at: datetime
    ready_at: datetime | None
    activated_at: datetime | None
    archived_at: datetime | None

    @staticmethod
    def resolve_active(obj: object) -> bool:
        return getattr(obj, "status", None) == "active"


class GcOut(Schema):
    collected: list[int]
    files_deleted: list[int]
    compacted: dict | None


class KnowledgeBaseOut(Schema):
    slug: str
    ref: str = Field(
        description="owner~slug: names this knowledge base in every URL for every caller "
        "(slugs are per owner; a bare slug names the caller's own, else the only one they see)"
    )
    name: str
    description: str
    owner: str | None
    embedder: str
    embedding_dimensions: int
    chunk_size: int
    chunk_overlap: int
    active_generation: int | None
    created_at: datetime

    @staticmethod
    def resolve_ref(obj: KnowledgeBase) -> str:
        return obj.qualified_ref

    @staticmethod
    def resolve_owner(obj: object) -> str | None:
        owner = getattr(obj, "owner", None)
        return owner.get_username() if owner else None

    @staticmethod
    def resolve_active_generation(obj: object) -> int | None:
        generation = getattr(obj, "active_generation", None)
        return generation.number if generation else None


class DocumentOut(Schema):
    id: int
    title: str
    original_filename: str
    sha256: str
    size: int
    content_type: str
    status: str
    error_message: str
    chunk_count: int
    created_at: datetime


class DuplicateOut(Schema):
    filename: str
    document_id: int
    existing_filename: str


class RejectedOut(Schema):
    filename: str
    reason: str


class RebuildIn(Schema):
    model_config = ConfigDict(extra="forbid")
    embedder: str | None = Field(default=None, max_length=255)
    chunk_size: JsonInt | None = Field(default=None, ge=CHUNK_SIZE.low, le=CHUNK_SIZE.high)
    chunk_overlap: JsonInt | None = Field(default=None, ge=CHUNK_OVERLAP.low, le=CHUNK_OVERLAP.high)
    auto_promote: StrictBool = False
    store_batch_size: JsonInt | None = Field(
        default=None, ge=STORE_BATCH_SIZE.low, le=STORE_BATCH_SIZE.high
    )
    embed_batch_size: JsonInt | None = Field(
        default=None,
        ge=EMBED_BATCH_SIZE.low,
        le=EMBED_BATCH_SIZE.high,
        description="texts per model call for local models; remote (openai:) ones size "
        "their own requests within RAGSTUDIO_OPENAI_MAX_BATCH_ITEMS",
    )
