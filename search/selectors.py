"""Reads of evaluation sets and their runs."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Q, QuerySet

from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.core.errors import Conflict, NotFound
from search.models import EvaluationQuery, EvaluationRun, EvaluationSet, Judgement, Unit


def evaluation_set_get(*, kb: KnowledgeBase, name: str) -> EvaluationSet:
    found = EvaluationSet.objects.filter(knowledge_base=kb, name=name).first()
    if found is None:
        raise NotFound(f"knowledge base {kb.slug!r} has no evaluation set {name!r}")
    return found


def evaluation_sets_of(kb: KnowledgeBase) -> list[EvaluationSet]:
    """The KB's sets with ``query_count`` and ``judged_count`` (queries with a relevant
    unit: the ones a run measures)."""
    return list(
        EvaluationSet.objects.filter(knowledge_base=kb).annotate(
            query_count=Count("queries", distinct=True),
            judged_count=Count(
                "queries", filter=Q(queries__judgements__grade__gt=0), distinct=True
            ),
        )
    )


def playground_marks(*, kb: KnowledgeBase, set_name: str, query: str) -> dict[Unit, int]:
    """The grades already given to this query's units in a set (for the playground)."""
    rows = Judgement.objects.filter(
        query__evaluation_set__knowledge_base=kb,
        query__evaluation_set__name=set_name,
        query__text=EvaluationQuery.normalise(query),
    ).values_list("document_id", "record_id", "grade")
    return {(doc, record): grade for doc, record, grade in rows}


def judgement_grades(evaluation_set: EvaluationSet) -> dict[tuple[str, int, str], int]:
    """(query text, document id, record id) -> grade, for every judgement of the set."""
    return {
        (text, doc, record): grade
        for text, doc, record, grade in Judgement.objects.filter(
            query__evaluation_set=evaluation_set
        ).values_list("query__text", "document_id", "record_id", "grade")
    }


def document_names(kb: KnowledgeBase, ids: Iterable[int]) -> dict[int, str]:
    """File names of these documents of the KB (deleted ones are absent)."""
    return dict(
        Document.objects.filter(knowledge_base=kb, pk__in=list(ids)).values_list(
            "pk", "original_filename"
        )
    )


def latest_run(evaluation_set: EvaluationSet, generation: Generation) -> EvaluationRun | None:
    """The set's latest finished measurement of the generation."""
    return (
        EvaluationRun.objects.filter(
            evaluation_set=evaluation_set,
            generation=generation,
            status=EvaluationRun.Status.SUCCEEDED,
        )
        .order_by("-created_at", "-id")
        .first()
    )


def latest_attempt(evaluation_set: EvaluationSet, generation: Generation) -> EvaluationRun | None:
    """The set's latest run on the generation, whatever its status (queued, running,
    failed: what a page shows beside the latest finished one)."""
    return (
        EvaluationRun.objects.filter(evaluation_set=evaluation_set, generation=generation)
        .order_by("-created_at", "-id")
        .first()
    )


def run_get(evaluation_set: EvaluationSet, run_id: int) -> EvaluationRun:
    run = runs_of(evaluation_set).filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"evaluation set {evaluation_set.name!r} has no run {run_id}")
    return run


def latest_runs(
    *, kb: KnowledgeBase, evaluation_set: EvaluationSet, numbers: Iterable[int]
) -> list[EvaluationRun]:
    """The latest run of the set on each of these generations (for a comparison);
    NotFound for a generation the KB does not have, Conflict for one not run yet."""
    runs = []
    for number in numbers:
        generation = kb.generations.filter(number=number).first()
        if generation is None:
            raise NotFound(f"knowledge base {kb.slug!r} has no generation {number}")
        run = latest_run(evaluation_set, generation)
        if run is None:
            raise Conflict(
                f"generation #{number} has not been evaluated on {evaluation_set.name!r}: "
                "run it first"
            )
        runs.append(run)
    return runs


def runs_of(evaluation_set: EvaluationSet) -> QuerySet[EvaluationRun]:
    return EvaluationRun.objects.filter(evaluation_set=evaluation_set).select_related(
        "generation", "evaluation_set"
    )


def judged_queries(evaluation_set: EvaluationSet) -> list[tuple[EvaluationQuery, dict[Unit, int]]]:
    """The set's queries with at least one relevant unit, each with its grades."""
    grades: dict[int, dict[Unit, int]] = {}
    for query_id, document_id, record, grade in Judgement.objects.filter(
        query__evaluation_set=evaluation_set
    ).values_list("query_id", "document_id", "record_id", "grade"):
        grades.setdefault(query_id, {})[(document_id, record)] = grade
    queries = evaluation_set.queries.filter(pk__in=list(grades)).order_by("pk")
    return [(q, grades[q.pk]) for q in queries if any(g > 0 for g in grades[q.pk].values())]
