"""Evaluation sets: queries with the documents (or records of a document) that should
answer them, per knowledge base, and the runs that measured a generation on them."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models

from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.core.bounds import EVAL_GRADE, QUERY_MAX_CHARS

EVALSET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# What an evaluation ranks: a document, or one record of a JSON Lines document when the
# query's judgements name records ("corpus.jsonl#4983"): (document id, record id or "").
Unit = tuple[int, str]


class EvaluationSet(models.Model):
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="evaluation_sets"
    )
    name = models.CharField(max_length=64, validators=[RegexValidator(EVALSET_NAME_PATTERN)])
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped by every change to its queries or judgements: a run records the version it
    # measured, so a stale run is never compared with a fresh one as if they were alike.
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base", "name"], name="evalset_unique_name_per_kb"
            )
        ]

    def __str__(self) -> str:
        return self.name


class EvaluationQuery(models.Model):
    evaluation_set = models.ForeignKey(
        EvaluationSet, on_delete=models.CASCADE, related_name="queries"
    )
    text = models.CharField(max_length=QUERY_MAX_CHARS)
    external_id = models.CharField(max_length=200, blank=True)  # the "id" of an import
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["evaluation_set", "text"], name="evalquery_unique_text_per_set"
            )
        ]

    def __str__(self) -> str:
        return self.text[:80]

    @staticmethod
    def normalise(text: str | None) -> str:
        """A query as a set stores it: white space collapsed, so "  a  b " and "a b" are
        one query."""
        return " ".join((text or "").split())


class Judgement(models.Model):
    """How well a document, or one record of it (a JSON Lines line), answers a query:
    0 not relevant (recorded, so the playground shows it), 1 relevant, higher: more so."""

    class Source(models.TextChoices):
        IMPORT = "import"
        API = "api"
        PLAYGROUND = "playground"

    query = models.ForeignKey(EvaluationQuery, on_delete=models.CASCADE, related_name="judgements")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="+")
    record_id = models.CharField(max_length=200, blank=True)  # "": the whole document
    grade = models.PositiveSmallIntegerField(validators=[MaxValueValidator(EVAL_GRADE.high)])
    chunk_id = models.CharField(max_length=64, blank=True)  # the result that was marked
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["query", "document", "record_id"], name="judgement_unique_unit"
            )
        ]

    def __str__(self) -> str:
        unit = f"{self.document_id}#{self.record_id}" if self.record_id else str(self.document_id)
        return f"{unit}: {self.grade}"


class EvaluationRun(models.Model):
    """One evaluation set measured on one generation: the mean of each metric per mode,
    and per query its metrics and top units (for side-by-side comparisons). Asked for
    through the API or a page, a run is queued and measured by a worker (``done`` queries
    so far); the command line and the quality gate measure in their own process."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    LIVE = (Status.QUEUED, Status.RUNNING)

    evaluation_set = models.ForeignKey(EvaluationSet, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUCCEEDED)
    done = models.PositiveIntegerField(default=0)  # queries measured so far
    error_message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # while a worker measures
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    set_version = models.PositiveIntegerField()
    fusion = models.CharField(max_length=32)
    queries = models.PositiveIntegerField()  # queries with at least one relevant unit
    # {mode: {metric: value}}
    metrics = models.JSONField(default=dict)
    # [{"id", "query", "modes": {mode: {metric: value, "top": [[document_id, record], ...]}}}]
    per_query = models.JSONField(default=list)
    seconds = models.FloatField(default=0.0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["evaluation_set", "generation"])]

    def __str__(self) -> str:
        return f"{self.evaluation_set} on #{self.generation.number}"
