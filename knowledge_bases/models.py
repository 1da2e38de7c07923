from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from ragstudio.core import languages
from ragstudio.core.bounds import CHUNK_SIZE
from ragstudio.core.origin import current_origin
from ragstudio.core.vocabulary import DEFAULT_QUALITY_GATE


def default_quality_gate() -> dict[str, float]:
    return dict(DEFAULT_QUALITY_GATE)


class KnowledgeBase(models.Model):
    # Slugs are a per-owner namespace: "docs" of alice and "docs" of bob are two KBs, so
    # creating one never tells anyone that another user's exists. ``owner~slug`` addresses
    # a KB whatever the viewer sees (see ``knowledge_bases.selectors.knowledge_base_get``).
    REF_SEPARATOR = "~"

    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="knowledge_bases",
    )
    # Read-only access (search, documents, generations); changes stay with owner and staff.
    shared_with = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="shared_knowledge_bases"
    )
    embedder = models.CharField(max_length=255, default="local")
    embedding_dimensions = models.PositiveIntegerField()
    chunk_size = models.PositiveIntegerField(validators=[MinValueValidator(CHUNK_SIZE.low)])
    chunk_overlap = models.PositiveIntegerField()
    # BM25's stemming: a language code, "auto" (the documents' majority language, chosen at
    # each build) or "none".
    language = models.CharField(
        max_length=8, default=languages.DEFAULT, choices=[(c, c) for c in languages.CHOICES]
    )
    retention = models.PositiveIntegerField(default=2, validators=[MaxValueValidator(100)])
    # The quality gate: "mode:metric" -> how far it may fall on any evaluation set between
    # the active generation and a new one before auto-promote refuses it.
    quality_gate = models.JSONField(default=default_quality_gate, blank=True)
    active_generation = models.ForeignKey(
        "Generation", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # A vector store's metadata (the OpenAI-compatible API): up to 16 short keys.
    metadata = models.JSONField(default=dict, blank=True)
    # Rollback undoes the last promote: each promote pushes the generation it replaced
    # (its pk), each rollback pops back to the newest one still archived.
    rollback_stack = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(chunk_overlap__lt=models.F("chunk_size")), name="kb_overlap_below_size"
            ),
            models.UniqueConstraint(fields=["owner", "slug"], name="kb_slug_unique_per_owner"),
            models.UniqueConstraint(
                fields=["slug"], condition=Q(owner__isnull=True), name="kb_slug_unique_unowned"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def qualified_ref(self) -> str:
        """``owner~slug``: the address that names this KB for every viewer."""
        owner = self.owner.get_username() if self.owner_id else ""  # type: ignore[union-attr]
        return f"{owner}{self.REF_SEPARATOR}{self.slug}"


def orphan_slugs_made_unique(sender: object, instance: object, **_kwargs: object) -> None:
    """Before a user is deleted: their knowledge bases stay, without an owner, and slugs
    of unowned knowledge bases are unique. One whose slug another knowledge base has (an
    unowned one, or another user's that may be orphaned in the same delete) takes the
    former owner's id as a suffix (`papers-u12`), so deleting users never fails."""
    for kb in KnowledgeBase.objects.filter(owner_id=getattr(instance, "pk", None)):
        if not KnowledgeBase.objects.filter(slug=kb.slug).exclude(pk=kb.pk).exists():
            continue
        base = kb.slug[: 64 - len(f"-u{kb.owner_id}") - 3]
        candidate, n = f"{base}-u{kb.owner_id}", 1
        while KnowledgeBase.objects.filter(slug=candidate).exists():
            n += 1
            candidate = f"{base}-u{kb.owner_id}-{n}"
        KnowledgeBase.objects.filter(pk=kb.pk).update(slug=candidate)


class Document(models.Model):
    """A document of a knowledge base: an identity (its file name, or an ``external_id``
    given by the API or a source) with versions. Its file fields are the latest
    version's; ``status`` is that version's indexing status, ``serving_version`` the
    version the serving generation shows (0: none), so a document being replaced stays
    searchable as its previous version."""

    class Status(models.TextChoices):
        PENDING = "pending"
        INDEXED = "indexed"
        FAILED = "failed"

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="documents"
    )
    title = models.CharField(max_length=500)
    original_filename = models.CharField(max_length=500)
    external_id = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=100)
    storage_path = models.CharField(max_length=500)
    version = models.PositiveIntegerField(default=1)
    serving_version = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error_message = models.TextField(blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    language = models.CharField(max_length=8, blank=True)  # detected when indexed
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["knowledge_base", "status"]),
            models.Index(fields=["knowledge_base", "sha256"]),
            models.Index(fields=["knowledge_base", "original_filename"]),
            models.Index(fields=["knowledge_base", "external_id"]),
        ]

    def __str__(self) -> str:
        return self.title


class DocumentVersion(models.Model):
    """One version of a document: its file, who brought it, and what indexing it did."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=100)
    storage_path = models.CharField(max_length=500)
    original_filename = models.CharField(max_length=500)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=200, blank=True)  # "uploaded", "restored from v1"
    # Filled when the version is indexed: its chunks, and how many of them had to be
    # embedded (their text was new) against reused.
    chunk_count = models.PositiveIntegerField(null=True, blank=True)
    chunks_embedded = models.PositiveIntegerField(null=True, blank=True)
    indexed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["document", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["document", "number"], name="document_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.document} v{self.number}"


class StatusWriteRefused(RuntimeError):
    """A generation's status was written outside its state machine."""


# Set only while knowledge_bases.generations.states writes a status
# (tests/knowledge_bases/test_states.py checks that no other module enters it).
_STATUS_WRITER: ContextVar[bool] = ContextVar("generation_status_writer", default=False)


def _require_status_writer() -> None:
    if not _STATUS_WRITER.get():
        raise StatusWriteRefused(
            "a generation's status changes only through "
            "knowledge_bases.generations.states.transition()"
        )


class GenerationQuerySet(models.QuerySet["Generation"]):
    def update(self, **kwargs: Any) -> int:
        if "status" in kwargs:
            _require_status_writer()
        return super().update(**kwargs)

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        if "status" in fields:
            _require_status_writer()
        return super().bulk_update(objs, fields, batch_size=batch_size)

    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        objs = list(objs)
        if any(o.status != Generation.Status.BUILDING for o in objs):
            _require_status_writer()
        return super().bulk_create(objs, *args, **kwargs)


class Generation(models.Model):
    class Status(models.TextChoices):
        BUILDING = "building"
        READY = "ready"
        ACTIVE = "active"
        ARCHIVED = "archived"
        FAILED = "failed"
        # Past retention: the row stays for history, the files are deleted after it.
        COLLECTED = "collected"

    # Generations whose files exist and can be searched: all but failed and collected ones.
    SEARCHABLE = (Status.ACTIVE, Status.READY, Status.ARCHIVED, Status.BUILDING)

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="generations"
    )
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING)
    embedder = models.CharField(max_length=255)
    embedder_fingerprint = models.CharField(max_length=500, blank=True)
    dimensions = models.PositiveIntegerField()
    chunk_size = models.PositiveIntegerField()
    chunk_overlap = models.PositiveIntegerField()
    # What its BM25 indexes stem for, and the setting it came from ("auto" resolves to the
    # documents' majority language when the generation is created).
    language = models.CharField(max_length=8, default=languages.DEFAULT)
    language_setting = models.CharField(max_length=8, default=languages.DEFAULT)
    chunk_count = models.PositiveIntegerField(default=0)
    vector_count = models.PositiveIntegerField(default=0)
    table_name = models.CharField(max_length=200)
    # The BM25 version published to the object store (scaled out): readers on any host
    # sync to at least this before searching. 0 on one machine.
    bm25_version = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    collected_at = models.DateTimeField(null=True, blank=True)
    files_deleted_at = models.DateTimeField(null=True, blank=True)
    # The check before promotion: None until run, then passed or not, with its report.
    check_passed = models.BooleanField(null=True, blank=True)
    check_report = models.JSONField(default=list, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    # The quality gate: None when not run or nothing to compare (no evaluation set, no
    # active generation), False for a regression (promoting it then needs an override).
    quality_passed = models.BooleanField(null=True, blank=True)
    quality_report = models.JSONField(default=dict, blank=True)
    quality_checked_at = models.DateTimeField(null=True, blank=True)

    objects = GenerationQuerySet.as_manager()

    class Meta:
        ordering = ["knowledge_base", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base", "number"], name="generation_unique_number"
            ),
            # At most one active generation per knowledge base, enforced by the database.
            models.UniqueConstraint(
                fields=["knowledge_base"],
                condition=Q(status="active"),
                name="generation_one_active_per_kb",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.knowledge_base.slug} #{self.number} ({self.status})"

    # The status as last read from or written to the database: save() refuses to change it
    # outside the state machine (a new row starts as building).
    _stored_status: str | None = None

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if update_fields is None or "status" in update_fields:
            current = self.__dict__.get("status")
            expected = self.Status.BUILDING if self._state.adding else self._stored_status
            if current != expected:
                _require_status_writer()
        super().save(*args, **kwargs)
        self._stored_status = self.__dict__.get("status")

    @classmethod
    def from_db(
        cls, db: str | None, field_names: Collection[str], values: Collection[Any], **kwargs: Any
    ) -> Generation:
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._stored_status = instance.__dict__.get("status")
        return instance

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        self._stored_status = self.__dict__.get("status")

    @classmethod
    @contextmanager
    def status_writer(cls) -> Iterator[None]:
        """For knowledge_bases.generations.states alone: status writes allowed inside."""
        token = _STATUS_WRITER.set(True)
        try:
            yield
        finally:
            _STATUS_WRITER.reset(token)


class VersionMask(models.Model):
    """A document version whose rows a generation holds but searches must not see: one
    being written (pending: it becomes visible in one step when all its chunks are
    stored), or one replaced (retired: its rows are deleted after the switch). Searches
    leave out every masked version, so a reader sees the old version or the new one,
    never both or neither, and never a document half-indexed."""

    class Kind(models.TextChoices):
        PENDING = "pending"
        RETIRED = "retired"

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="masks")
    document_id = models.BigIntegerField()  # rows outlive a deleted document's row
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["generation", "document_id", "version"], name="version_mask_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.document_id} v{self.version} in {self.generation_id}"


class GenerationEvent(models.Model):
    """Every lifecycle transition: who, when, from, to."""

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.to_status}"


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer key for every programmatic surface (our API, /v1/, /dify/, /mcp). Only its
    hash is stored; the key is shown once. A key acts as its user, narrowed: ``read``
    keys only search and read, a key with knowledge bases reaches only those, an expired
    or revoked key nothing."""

    PREFIX_LENGTH = 10  # what the admin shows of a token, and what revoking it takes
    PREFIX = "rs_"
    # Set when a request authenticates with the key: the knowledge bases it is limited to
    # (empty: all its user sees), read once per request.
    kb_ids: frozenset[int] = frozenset()

    class Scope(models.TextChoices):
        READ = "read", "read-only: search and read"
        WRITE = "write", "read-write"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    key_prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.WRITE)
    # Empty: every knowledge base its user sees.
    knowledge_bases: models.ManyToManyField[KnowledgeBase, Any] = models.ManyToManyField(
        KnowledgeBase, blank=True, related_name="api_tokens"
    )
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user})"

    @classmethod
    def issue(
        cls,
        *,
        user: object,
        name: str = "",
        scope: str = "write",
        expires_at: Any = None,
        knowledge_bases: Iterable[KnowledgeBase] = (),
    ) -> tuple[ApiToken, str]:
        token = cls.PREFIX + secrets.token_urlsafe(32)
        row = cls.objects.create(
            user=user,
            name=name,
            key_prefix=token[: cls.PREFIX_LENGTH],
            key_hash=_hash_token(token),
            scope=scope,
            expires_at=expires_at,
        )
        kbs = list(knowledge_bases)
        if kbs:
            row.knowledge_bases.set(kbs)
        return row, token

    @property
    def read_only(self) -> bool:
        return self.scope == self.Scope.READ

    @classmethod
    def hash(cls, token: str) -> str:
        return _hash_token(token)


class StorageCleanup(models.Model):
    """Files to delete after the rows that referenced them are gone (a deleted knowledge
    base's tables, indexes and uploads). Written in the deleting transaction, removed once
    the files are; GC finishes what a crash interrupted."""

    lancedb_uri = models.CharField(max_length=1000, blank=True)
    table_name = models.CharField(max_length=200, blank=True)
    path = models.CharField(max_length=1000, blank=True)  # a directory, removed whole
    remote = models.CharField(max_length=1000, blank=True)  # an object-store prefix, whole
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.table_name or self.path or self.remote


class ApiFile(models.Model):
    """A file uploaded through the OpenAI-compatible API (`POST /v1/files`): kept as sent,
    and copied into a knowledge base as a document when it is added to a vector store."""

    public_id = models.CharField(max_length=40, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_files"
    )
    filename = models.CharField(max_length=500)
    size = models.PositiveBigIntegerField()
    purpose = models.CharField(max_length=40)
    sha256 = models.CharField(max_length=64)
    storage_path = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.filename})"

    @staticmethod
    def new_id() -> str:
        return "file-" + secrets.token_hex(12)


class VectorStoreFileBatch(models.Model):
    public_id = models.CharField(max_length=40, unique=True)
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="file_batches"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.public_id

    @staticmethod
    def new_id() -> str:
        return "vsfb_" + secrets.token_hex(12)


class VectorStoreFile(models.Model):
    """A file added to a vector store (a knowledge base): the document it became (none
    when it was refused: ``error`` says why), and its attributes, which search filters."""

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="store_files"
    )
    file = models.ForeignKey(ApiFile, on_delete=models.CASCADE, related_name="store_files")
    document = models.ForeignKey(
        Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="store_files"
    )
    batch = models.ForeignKey(
        VectorStoreFileBatch,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="files",
    )
    attributes = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancelled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["knowledge_base", "file"], name="store_file_once")
        ]

    def __str__(self) -> str:
        return f"{self.file_id} in {self.knowledge_base_id}"


class AuditEvent(models.Model):
    """Who did what, when, from where: uploads, deletes, versions, generation actions,
    settings, keys, sign-ins. Kept RAGSTUDIO_AUDIT_RETENTION_DAYS; recorded with
    ``AuditEvent.record`` (the actor and address come from the request when not given)."""

    class Action(models.TextChoices):
        DOCUMENTS_UPLOAD = "documents.upload", "documents uploaded"
        DOCUMENT_REPLACE = "document.replace", "document replaced"
        DOCUMENT_DELETE = "document.delete", "document deleted"
        VERSION_RESTORE = "document.restore", "version restored"
        GENERATION_REBUILD = "generation.rebuild", "rebuild started"
        GENERATION_PROMOTE = "generation.promote", "generation promoted"
        GENERATION_OVERRIDE = "generation.override", "quality gate overridden"
        GENERATION_ROLLBACK = "generation.rollback", "rolled back"
        GENERATION_GC = "generation.gc", "generations collected"
        KB_CREATE = "kb.create", "knowledge base created"
        KB_UPDATE = "kb.update", "settings changed"
        KB_DELETE = "kb.delete", "knowledge base deleted"
        KB_EXPORT = "kb.export", "knowledge base exported"
        KB_IMPORT = "kb.import", "knowledge base imported"
        KEY_CREATE = "key.create", "API key created"
        KEY_REVOKE = "key.revoke", "API key revoked"
        SOURCE_ADD = "source.add", "source added"
        SOURCE_REMOVE = "source.remove", "source removed"
        LOGIN = "auth.login", "signed in"
        LOGIN_FAILED = "auth.login_failed", "sign-in failed"
        LOCKOUT = "auth.lockout", "locked out"
        LOGOUT = "auth.logout", "signed out"

    created_at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=40, choices=Action.choices, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The names stay readable after the user or the knowledge base is deleted.
    actor_name = models.CharField(max_length=150, blank=True, db_index=True)
    via = models.CharField(max_length=16, default="system")
    ip = models.GenericIPAddressField(null=True, blank=True)
    knowledge_base = models.ForeignKey(
        KnowledgeBase, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kb_slug = models.CharField(max_length=100, blank=True, db_index=True)
    target = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action}"

    @classmethod
    def record(
        cls,
        action: str,
        *,
        actor: Any = None,
        kb: KnowledgeBase | None = None,
        target: str = "",
        detail: dict[str, Any] | None = None,
        actor_name: str = "",
    ) -> AuditEvent:
        origin = current_origin()
        if not getattr(actor, "pk", None):
            actor = origin.user()
        name = actor_name or (actor.get_username() if actor is not None else "")
        return cls.objects.create(
            created_at=timezone.now(),
            action=action,
            actor=actor,
            actor_name=name[:150],
            via=origin.via,
            ip=_valid_ip(origin.ip),
            knowledge_base=kb if getattr(kb, "pk", None) else None,
            kb_slug=(kb.slug if kb is not None else "")[:100],
            target=target[:300],
            detail=detail or {},
        )


def _valid_ip(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


class Transfer(models.Model):
    """A knowledge base exported into an archive, or an archive imported as a knowledge
    base (knowledge_bases/services/transfer.py), run by a worker with its progress."""

    class Kind(models.TextChoices):
        EXPORT = "export"
        IMPORT = "import"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    LIVE = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # The exported knowledge base, or the one an import created (once it has).
    knowledge_base = models.ForeignKey(
        KnowledgeBase, null=True, blank=True, on_delete=models.SET_NULL, related_name="transfers"
    )
    kb_slug = models.CharField(max_length=100, blank=True)
    # export: {"all_generations"}; import: {"slug", "documents_only"}
    options = models.JSONField(default=dict, blank=True)
    archive = models.CharField(max_length=1000, blank=True)  # under DATA_DIR/transfers
    size = models.PositiveBigIntegerField(default=0)
    stage = models.CharField(max_length=100, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.kb_slug} ({self.status})"


class RebuildPlanRun(models.Model):
    """A rebuild's plan, computed by a worker: planning reads and chunks every document
    (minutes for a large knowledge base), which no web request should hold."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    LIVE = (Status.QUEUED, Status.RUNNING)

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="rebuild_plans"
    )
    # The settings planned: {"embedder", "chunk_size", "chunk_overlap", "language"}
    options = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    documents = models.PositiveIntegerField(default=0)  # the KB's documents when asked
    plan = models.JSONField(default=dict, blank=True)  # the RebuildPlan, once computed
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"plan of {self.knowledge_base} ({self.status})"


class RateCounter(models.Model):
    """Requests of one kind by one user in one minute (per-user rate limits), counted in
    the database so that every web process and host agrees."""

    key = models.CharField(max_length=100)  # "<kind>:<user id>"
    window = models.BigIntegerField()  # the minute: Unix time // 60
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "window"], name="rate_counter_unique_window")
        ]

    def __str__(self) -> str:
        return f"{self.key} @ {self.window}: {self.count}"
