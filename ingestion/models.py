from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.core.bounds import EMBED_BATCH_SIZE, STORE_BATCH_SIZE


class IngestionJob(models.Model):
    class Kind(models.TextChoices):
        INGEST = "ingest"
        REBUILD = "rebuild"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    # The statuses of a job that holds its documents and may still write to its generation.
    LIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    MAX_SAMPLES = 240
    MAX_FAILURES = 200

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="jobs")
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.INGEST)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    documents = models.ManyToManyField(Document, related_name="jobs", blank=True)

    # Counters, in chunks. embedded: vectors computed; skipped: vectors reused;
    # persisted: rows durably written; buffered: handed to the writer, not yet written.
    total = models.PositiveIntegerField(default=0)
    embedded = models.PositiveIntegerField(default=0)
    persisted = models.PositiveIntegerField(default=0)
    buffered = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    documents_total = models.PositiveIntegerField(default=0)
    documents_done = models.PositiveIntegerField(default=0)
    documents_failed = models.PositiveIntegerField(default=0)
    # Every document has been chunked: `total` is final (until then the page says
    # "counting" and gives no ETA).
    total_known = models.BooleanField(default=False)
    # Documents that failed in this job: [{"document_id", "name", "error"}], the first
    # MAX_FAILURES of them.
    failures = models.JSONField(default=list, blank=True)
    rate = models.FloatField(default=0.0, help_text="chunks per second, recent window")
    eta_seconds = models.FloatField(null=True, blank=True)
    # [seconds since start, embedded + skipped, persisted], one per report (thinned to at
    # most MAX_SAMPLES over the whole run): the throughput chart on the job page.
    samples = models.JSONField(default=list, blank=True)
    # A remote embedder's throttle, as last reported: concurrency (requests in flight),
    # batch_items, requests_per_min, tokens_per_min, throttle_events, throttled_requests,
    # retries, note ("throttled to 2 in flight after 429"). Empty for local models.
    embedding = models.JSONField(default=dict, blank=True)

    store_batch_size = models.PositiveIntegerField(
        validators=[
            MinValueValidator(STORE_BATCH_SIZE.low),
            MaxValueValidator(STORE_BATCH_SIZE.high),
        ]
    )
    embed_batch_size = models.PositiveIntegerField(
        validators=[
            MinValueValidator(EMBED_BATCH_SIZE.low),
            MaxValueValidator(EMBED_BATCH_SIZE.high),
        ]
    )

    auto_promote = models.BooleanField(
        default=False, help_text="rebuilds: promote the generation when it passes its check"
    )
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["generation", "status"])]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.kind}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def counting(self) -> bool:
        """Documents are still being chunked: the total may still grow."""
        return not self.total_known and not self.is_finished

    @property
    def ready(self) -> int:
        return self.embedded + self.skipped

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.heartbeat_at or self.started_at
        return (end - self.started_at).total_seconds()


class Source(models.Model):
    """Where a knowledge base's documents also live, kept in sync on a schedule: a folder,
    an S3 prefix, web pages or a Git repository (``ingestion.connectors``). ``config``
    holds the kind's settings; credentials are never stored, only the names of the
    environment variables that hold them."""

    class Status(models.TextChoices):
        NEVER = "never"  # not synced yet
        RUNNING = "running"
        OK = "ok"
        FAILED = "failed"

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="sources"
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16)
    config = models.JSONField(default=dict)
    # Minutes between syncs (0: only when asked).
    schedule_minutes = models.PositiveIntegerField(default=60)
    # What a file removed at the source does here: its document is deleted, or kept.
    delete_missing = models.BooleanField(default=True)
    enabled = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEVER)
    claimed_at = models.DateTimeField(null=True, blank=True)  # a sync running since
    last_sync_at = models.DateTimeField(null=True, blank=True)
    next_sync_at = models.DateTimeField(null=True, blank=True)
    # seen, added, changed, unchanged, removed, failed, duplicates, seconds, job
    last_stats = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["knowledge_base", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base", "name"], name="source_unique_name_per_kb"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def location(self) -> str:
        """Where it reads, in a few words (for pages and lists)."""
        config = self.config if isinstance(self.config, dict) else {}
        for key in ("path", "uri", "sitemap", "repository"):
            if config.get(key):
                return str(config[key])
        urls = config.get("urls") or []
        return f"{len(urls)} page(s)" if urls else ""


class SourceItem(models.Model):
    """One file of a source as the last sync saw it: its fingerprint, the document it
    became, or why it could not."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="items")
    key = models.CharField(max_length=2000)
    key_hash = models.CharField(max_length=64)  # sha256 of the key: unique and indexable
    fingerprint = models.CharField(max_length=300, blank=True)
    document = models.ForeignKey(
        Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="source_items"
    )
    error = models.TextField(blank=True)  # why it could not be read or indexed
    seen_at = models.DateTimeField()

    class Meta:
        ordering = ["source", "key"]
        constraints = [
            models.UniqueConstraint(fields=["source", "key_hash"], name="source_item_unique_key")
        ]

    def __str__(self) -> str:
        return self.key
