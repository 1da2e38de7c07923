from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field, StrictBool

from knowledge_bases.generations import OVERRIDE_MAX_CHARS
from knowledge_bases.models import KnowledgeBase
from knowledge_bases.services import rebuild_plan_of
from ragstudio.core.bounds import CHUNK_OVERLAP, CHUNK_SIZE, EMBED_BATCH_SIZE, STORE_BATCH_SIZE
from ragstudio.core.languages import LanguageChoice
from ragstudio.core.vocabulary import GATE_KEYS
from ragstudio.schemas import JSON_INTEGER, json_number, within

GateKey = Literal[GATE_KEYS]  # type: ignore[valid-type]
# Bounds first, then the JSON-number check: the other order puts "ge"/"le" (not
# "minimum"/"maximum") into the OpenAPI schema.
Allowance = Annotated[float, Field(ge=0, le=1), BeforeValidator(json_number)]
QUALITY_GATE_HELP = (
    'The quality gate: {"mode:metric": largest drop allowed} between the active generation '
    "and a new one, on every evaluation set, before auto-promote refuses it. Default "
    '{"hybrid:ndcg@10": 0.01}; {} turns it off.'
)


class KnowledgeBaseIn(Schema):
    model_config = ConfigDict(extra="forbid")  # a typo is an error, not a silent default
    slug: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    embedder: str | None = Field(default=None, max_length=255)
    chunk_size: Annotated[int, within(CHUNK_SIZE), JSON_INTEGER] | None = None
    chunk_overlap: Annotated[int, within(CHUNK_OVERLAP), JSON_INTEGER] | None = None
    quality_gate: dict[GateKey, Allowance] | None = Field(
        default=None, description=QUALITY_GATE_HELP
    )
    language: LanguageChoice | None = Field(
        default=None,
        description="BM25's stemming: a language code (default `en`), `auto` (the "
        "documents' majority language, chosen at each build) or `none`.",
    )


class KnowledgeBaseUpdateIn(Schema):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    quality_gate: dict[GateKey, Allowance] | None = Field(
        default=None, description=QUALITY_GATE_HELP
    )


class PromoteIn(Schema):
    model_config = ConfigDict(extra="forbid")
    override_quality: str = Field(
        default="",
        max_length=OVERRIDE_MAX_CHARS,
        description="Promote a generation that failed the quality gate anyway: the reason, "
        "recorded in its events with who gave it. Without it such a promote is 409 with the "
        "metrics.",
    )


class GenerationOut(Schema):
    number: int
    status: str
    active: bool
    embedder: str
    embedder_fingerprint: str
    dimensions: int
    chunk_size: int
    chunk_overlap: int
    language: str = Field(description="The language its BM25 indexes stem for.")
    chunk_count: int
    check_passed: bool | None
    check_report: list[dict]
    quality_passed: bool | None = Field(
        description="The quality gate: null when not run or nothing to compare, false for a "
        "regression (promote then needs override_quality)."
    )
    quality_report: dict
    quality_checked_at: datetime | None
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
    versions_swept: int = Field(
        0, description="Replaced or failed document versions whose rows were deleted."
    )


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
    language: str = Field(description="BM25's stemming setting (`auto`: per build).")
    quality_gate: dict[str, float]
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
    external_id: str = Field(description="Its identity when not its file name ('' if none).")
    sha256: str
    size: int
    content_type: str
    version: int = Field(description="The latest version (what the fields above describe).")
    serving_version: int = Field(
        description="The version searches find (0: none yet); below `version` while the "
        "latest is being indexed, or when it failed."
    )
    status: str = Field(description="Of the latest version: pending, indexed or failed.")
    error_message: str
    chunk_count: int
    language: str = Field(description="Detected in its text when indexed ('' if unknown).")
    created_at: datetime
    updated_at: datetime


class DocumentVersionOut(Schema):
    number: int
    sha256: str
    size: int
    content_type: str
    original_filename: str
    uploaded_by: str | None
    note: str
    chunk_count: int | None = Field(description="Chunks once indexed (null: not yet).")
    chunks_embedded: int | None = Field(
        description="Of those, the chunks whose text was new (the rest reused vectors)."
    )
    created_at: datetime
    indexed_at: datetime | None
    current: bool = Field(description="The document's latest version.")
    serving: bool = Field(description="The version searches find.")

    @staticmethod
    def resolve_uploaded_by(obj: object) -> str | None:
        user = getattr(obj, "uploaded_by", None)
        return user.get_username() if user is not None else None

    @staticmethod
    def resolve_current(obj: object) -> bool:
        return obj.number == obj.document.version  # type: ignore[attr-defined]

    @staticmethod
    def resolve_serving(obj: object) -> bool:
        return obj.number == obj.document.serving_version  # type: ignore[attr-defined]


class DuplicateOut(Schema):
    filename: str
    document_id: int
    existing_filename: str


class RejectedOut(Schema):
    filename: str
    reason: str


class PlanIn(Schema):
    model_config = ConfigDict(extra="forbid")
    embedder: str | None = Field(default=None, max_length=255)
    chunk_size: Annotated[int, within(CHUNK_SIZE), JSON_INTEGER] | None = None
    chunk_overlap: Annotated[int, within(CHUNK_OVERLAP), JSON_INTEGER] | None = None
    language: LanguageChoice | None = Field(
        default=None,
        description="BM25's stemming: a language code, `auto` (the documents' majority "
        "language) or `none`; a change is a rebuild. Default: the KB's.",
    )


class RebuildIn(PlanIn):
    auto_promote: StrictBool = False
    dry_run: StrictBool = Field(
        default=False,
        description="Plan only (202 with the queued plan, as `POST .../generations/plans`): "
        "chunks, reused vectors, what to embed, ETA and disk size; nothing is embedded or "
        "written.",
    )
    store_batch_size: Annotated[int, within(STORE_BATCH_SIZE), JSON_INTEGER] | None = None
    embed_batch_size: Annotated[int, within(EMBED_BATCH_SIZE), JSON_INTEGER] | None = Field(
        default=None,
        description="texts per model call for the local and fastembed: models; local-fast "
        "runs its own (runs of 4 texts per core) and remote (openai:) ones size their own "
        "requests within RAGSTUDIO_OPENAI_MAX_BATCH_ITEMS",
    )


class SettingChangeOut(Schema):
    name: str
    active: str | int | None
    new: str | int | None
    changed: bool


class PlanFailureOut(Schema):
    document_id: int
    filename: str
    reason: str


class RebuildPlanOut(Schema):
    settings: list[SettingChangeOut]
    documents: int
    chunks: int = Field(description="Chunks the new settings make (chunked for real).")
    reused: int = Field(description="Of those, chunks whose vectors exist for the same model.")
    to_embed: int
    failed: list[PlanFailureOut]
    rate_chunks_per_s: float | None = Field(
        description="This installation's measured embedding rate for the model (null: none yet)."
    )
    rate_basis: str
    eta_seconds: float | None
    disk_bytes: int | None
    disk_basis: str
    seconds: float


class RebuildPlanRunOut(Schema):
    id: int
    knowledge_base: str
    status: Literal["queued", "running", "succeeded", "failed"] = Field(
        description="A worker computes the plan (it reads every document); poll "
        "`GET /api/kbs/{slug}/generations/plans/{id}` until succeeded or failed."
    )
    settings: dict[str, str | int | None] = Field(description="The settings planned.")
    documents: int = Field(description="The knowledge base's documents when asked.")
    plan: RebuildPlanOut | None = Field(description="Once succeeded.")
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_knowledge_base(obj: Any) -> str:
        return str(obj.knowledge_base.slug)

    @staticmethod
    def resolve_settings(obj: Any) -> dict[str, Any]:
        return dict(obj.options)

    @staticmethod
    def resolve_plan(obj: Any) -> Any:
        return rebuild_plan_of(obj)

    @staticmethod
    def resolve_error(obj: Any) -> str:
        return str(obj.error_message)


class ApiKeyIn(Schema):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    scope: Literal["read", "write"] = Field(
        default="read", description="read: search and read only; write: everything you may do."
    )
    knowledge_bases: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Refs of the knowledge bases the key reaches (empty: all you see).",
    )
    expires_in_days: Annotated[int, Field(ge=1, le=3650), JSON_INTEGER] | None = Field(
        default=None, description="Days until it stops working (null: never)."
    )


class ApiKeyOut(Schema):
    id: int
    name: str
    prefix: str = Field(description="Its first characters, to tell keys apart.")
    user: str
    scope: str
    knowledge_bases: list[str] = Field(description="Refs it is limited to (empty: all).")
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @staticmethod
    def resolve_prefix(obj: Any) -> str:
        return str(obj.key_prefix)

    @staticmethod
    def resolve_user(obj: Any) -> str:
        return str(obj.user.get_username())

    @staticmethod
    def resolve_knowledge_bases(obj: Any) -> list[str]:
        return sorted(kb.qualified_ref for kb in obj.knowledge_bases.all())


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The secret: shown this once, never stored.")


class ExportIn(Schema):
    model_config = ConfigDict(extra="forbid")
    all_generations: StrictBool = Field(
        default=False,
        description="Every retained generation (active, ready, archived), not only the "
        "one that serves.",
    )


class TransferOut(Schema):
    id: int
    kind: str = Field(description="`export` or `import`")
    status: str = Field(description="`queued`, `running`, `succeeded` or `failed`")
    knowledge_base: str = Field(description="the exported KB, or the one the import created")
    stage: str
    done: int
    total: int
    size: int = Field(description="the archive's bytes")
    result: dict[str, Any]
    error_message: str
    download_url: str | None = Field(description="where a finished export is downloaded")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_knowledge_base(obj: Any) -> str:
        return obj.knowledge_base.slug if obj.knowledge_base_id else obj.kb_slug

    @staticmethod
    def resolve_download_url(obj: Any) -> str | None:
        if obj.kind == "export" and obj.status == "succeeded" and obj.archive:
            return f"/api/transfers/{obj.pk}/download"
        return None
