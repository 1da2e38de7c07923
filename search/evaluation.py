"""Evaluation sets: built from JSON Lines, the API and the playground; run on a
generation (every mode, every metric, per query); compared between two generations; and
the quality gate that compares a new generation with the active one before it may be
auto-promoted.

What is ranked is a *unit*: a document, or one record of a JSON Lines document when the
query's judgements name records ("corpus.jsonl#4983"). A chunk ranking becomes a unit
ranking by each unit's best chunk, as a reader would see it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q

from knowledge_bases import lifecycle
from knowledge_bases.engines import generation_reader
from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.bounds import (
    EVAL_GRADE,
    EVAL_IMPORT_MAX_BYTES,
    EVAL_JUDGEMENTS_PER_QUERY,
    EVAL_LINE_MAX_BYTES,
    EVAL_QUERIES,
    EVAL_SETS,
    QUERY_MAX_CHARS,
)
from ragstudio.errors import Conflict, NotFound, ValidationError
from search.fusion import FusionParams
from search.metrics import first_occurrences, mean_metrics, query_metrics
from search.models import (
    EVALSET_NAME_PATTERN,
    EvaluationQuery,
    EvaluationRun,
    EvaluationSet,
    Judgement,
)
from search.results import SearchParams
from search.services import ranked_hits
from search.vocabulary import DEFAULT_FUSION, METRIC_LABELS, SEARCH_MODES, gate_label

# Chunks each mode ranks per query: enough for 100 distinct units in most cases.
EVAL_POOL = 300
TOP_KEPT = 10  # units kept per query and mode, for side-by-side comparisons
TARGET_MAX_CHARS = 700  # a file name (500) and "#" a record id (200)
_NAME = re.compile(EVALSET_NAME_PATTERN)

Unit = tuple[int, str]  # (document id, record id or "")


# --- building sets ---------------------------------------------------------------------


@dataclass(frozen=True)
class QueryIn:
    """One query and its judgements as given: targets are document ids (int) or file
    names, optionally with ``#record`` (str); grades keyed the same way, default 1."""

    text: str
    relevant: Sequence[int | str] = ()
    grades: dict[str, int] = field(default_factory=dict)
    external_id: str = ""


@dataclass
class AddResult:
    queries_added: int = 0
    queries_updated: int = 0
    judgements: int = 0


def evaluation_set_create(
    *, kb: KnowledgeBase, name: str, description: str = "", user: Any = None
) -> EvaluationSet:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise ValidationError(
            "an evaluation set's name is 1-64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit",
            {"field": "name"},
        )
    if len(description) > 10_000:
        raise ValidationError("description is at most 10,000 characters", {"field": "description"})
    if EvaluationSet.objects.filter(knowledge_base=kb).count() >= EVAL_SETS.high:
        raise Conflict(
            f"a knowledge base holds at most {EVAL_SETS.high} evaluation sets (the quality "
            "gate runs every one): delete one first",
            {"limit": EVAL_SETS.high},
        )
    try:
        with transaction.atomic():
            return EvaluationSet.objects.create(
                knowledge_base=kb,
                name=name,
                description=description,
                created_by=user if getattr(user, "pk", None) else None,
            )
    except IntegrityError:
        raise Conflict(
            f"this knowledge base already has an evaluation set named {name!r}", {"name": name}
        ) from None


def evaluation_set_get(*, kb: KnowledgeBase, name: str) -> EvaluationSet:
    found = EvaluationSet.objects.filter(knowledge_base=kb, name=name).first()
    if found is None:
        raise NotFound(f"knowledge base {kb.slug!r} has no evaluation set {name!r}")
    return found


def evaluation_set_get_or_create(
    *, kb: KnowledgeBase, name: str, user: Any = None
) -> EvaluationSet:
    found = EvaluationSet.objects.filter(knowledge_base=kb, name=name).first()
    return found or evaluation_set_create(kb=kb, name=name, user=user)


def evaluation_set_delete(*, evaluation_set: EvaluationSet) -> None:
    evaluation_set.delete()


class _Targets:
    """Resolves the targets of judgements (ids, file names, ``name#record``) to units of
    one knowledge base, with errors that say which line and which name."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self._by_id: dict[int, str] | None = None
        self._by_name: dict[str, list[int]] = {}

    def _load(self) -> dict[int, str]:
        if self._by_id is None:
            self._by_id = dict(
                Document.objects.filter(knowledge_base=self.kb).values_list(
                    "pk", "original_filename"
                )
            )
            for pk, name in self._by_id.items():
                self._by_name.setdefault(name, []).append(pk)
        return self._by_id

    def resolve(self, target: object) -> Unit:
        by_id = self._load()
        if isinstance(target, bool) or not isinstance(target, int | str):
            raise ValueError(f"{target!r} is neither a document id nor a file name")
        if isinstance(target, int):
            if target not in by_id:
                raise ValueError(f"there is no document {target} in this knowledge base")
            return target, ""
        name, record = target, ""
        if name not in self._by_name and "#" in target:
            name, record = target.rsplit("#", 1)
            if not record or len(record) > 200:
                raise ValueError(f"{target!r}: the record after '#' must be 1-200 characters")
        if name.isdigit() and int(name) in by_id and name not in self._by_name:
            return int(name), record
        ids = self._by_name.get(name, [])
        if not ids:
            raise ValueError(f"there is no document named {name!r} in this knowledge base")
        if len(ids) > 1:
            raise ValueError(
                f"{len(ids)} documents are named {name!r} (ids {', '.join(map(str, ids))}): "
                "name one by its id"
            )
        return ids[0], record


def _grade(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in EVAL_GRADE:
        raise ValueError(
            f"{where}: a grade is an integer from {EVAL_GRADE.low} to {EVAL_GRADE.high}"
        )
    return value


def _judgements_of(query: QueryIn, targets: _Targets) -> dict[Unit, int]:
    """The units of one query with their grades."""
    text = " ".join(query.text.split())
    if not text:
        raise ValueError("the query is empty")
    if len(query.text) > QUERY_MAX_CHARS:
        raise ValueError(f"the query is longer than {QUERY_MAX_CHARS} characters")
    given = list(query.relevant) + [k for k in query.grades if k not in map(str, query.relevant)]
    if len(given) > EVAL_JUDGEMENTS_PER_QUERY.high:
        raise ValueError(f"at most {EVAL_JUDGEMENTS_PER_QUERY.high} judged documents a query")
    units: dict[Unit, int] = {}
    for target in given:
        if isinstance(target, str) and len(target) > TARGET_MAX_CHARS:
            raise ValueError(f"a document name is at most {TARGET_MAX_CHARS} characters")
        grade = _grade(query.grades.get(str(target), 1), f"grade of {target!r}")
        units[targets.resolve(target)] = grade
    return units


@transaction.atomic
def evaluation_queries_add(
    *,
    evaluation_set: EvaluationSet,
    queries: Sequence[QueryIn],
    source: str = Judgement.Source.API,
    user: Any = None,
    errors_prefix: Sequence[str] = (),
) -> AddResult:
    """Add queries with their judgements (a query already in the set gets the new
    judgements, replacing the grade of a unit judged before). All or nothing: any bad
    query, target or grade is a 422 naming it, and nothing is stored."""
    kb = evaluation_set.knowledge_base
    evaluation_set = EvaluationSet.objects.select_for_update().get(pk=evaluation_set.pk)
    targets = _Targets(kb)
    resolved: list[tuple[QueryIn, dict[Unit, int]]] = []
    problems: list[dict[str, Any]] = []
    for i, query in enumerate(queries):
        where = errors_prefix[i] if i < len(errors_prefix) else f"query {i + 1}"
        try:
            resolved.append((query, _judgements_of(query, targets)))
        except ValueError as exc:
            problems.append({"where": where, "message": str(exc)})
    if problems:
        first = problems[0]
        raise ValidationError(
            f"{len(problems)} invalid quer{'y' if len(problems) == 1 else 'ies'}; "
            f"{first['where']}: {first['message']}",
            {"errors": problems[:50]},
        )
    existing = {q.text: q for q in evaluation_set.queries.all()}
    new_texts = {" ".join(q.text.split()) for q, _ in resolved} - set(existing)
    if len(existing) + len(new_texts) > EVAL_QUERIES.high:
        raise ValidationError(
            f"an evaluation set holds at most {EVAL_QUERIES.high} queries "
            f"({len(existing)} there, {len(new_texts)} new)",
            {"field": "queries"},
        )
    result = AddResult()
    creator = user if getattr(user, "pk", None) else None
    for query, units in resolved:
        text = " ".join(query.text.split())
        row = existing.get(text)
        if row is None:
            row = EvaluationQuery.objects.create(
                evaluation_set=evaluation_set, text=text, external_id=query.external_id[:200]
            )
            existing[text] = row
            result.queries_added += 1
        else:
            result.queries_updated += 1
        for (document_id, record), grade in units.items():
            Judgement.objects.update_or_create(
                query=row,
                document_id=document_id,
                record_id=record,
                defaults={"grade": grade, "source": source, "created_by": creator},
            )
            result.judgements += 1
    EvaluationSet.objects.filter(pk=evaluation_set.pk).update(version=F("version") + 1)
    return result


def _jsonl_queries(chunks: Iterable[bytes]) -> tuple[list[QueryIn], list[str]]:
    """Parse a JSON Lines file of ``{"query", "relevant", "grades", "id"}`` objects, with
    its size and line length bounded; a 422 lists the bad lines."""
    data = bytearray()
    for piece in chunks:
        data += piece
        if len(data) > EVAL_IMPORT_MAX_BYTES:
            raise ValidationError(
                f"the file is larger than {EVAL_IMPORT_MAX_BYTES:,} bytes", {"field": "file"}
            )
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("the file is not UTF-8 text", {"field": "file"}) from None
    queries: list[QueryIn] = []
    where: list[str] = []
    problems: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            queries.append(_query_from_json(line))
            where.append(f"line {number}")
        except ValueError as exc:
            problems.append({"where": f"line {number}", "message": str(exc)})
    if problems:
        first = problems[0]
        raise ValidationError(
            f"{len(problems)} invalid line(s); {first['where']}: {first['message']}",
            {"errors": problems[:50]},
        )
    if not queries:
        raise ValidationError("the file holds no queries", {"field": "file"})
    return queries, where


def _query_from_json(line: str) -> QueryIn:
    if len(line.encode()) > EVAL_LINE_MAX_BYTES:
        raise ValueError(f"the line is longer than {EVAL_LINE_MAX_BYTES:,} bytes")
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(record) - {"query", "relevant", "grades", "id"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    query = record.get("query")
    if not isinstance(query, str):
        raise ValueError('"query" must be a string')
    relevant = record.get("relevant", [])
    if not isinstance(relevant, list) or not all(
        isinstance(t, int | str) and not isinstance(t, bool) for t in relevant
    ):
        raise ValueError('"relevant" must be a list of document ids or file names')
    grades = record.get("grades", {})
    if not isinstance(grades, dict):
        raise ValueError('"grades" must be an object of document id or file name: grade')
    external = record.get("id", "")
    if not isinstance(external, str | int) or isinstance(external, bool):
        raise ValueError('"id" must be a string or an integer')
    if not relevant and not grades:
        raise ValueError("a query needs at least one judged document (relevant or grades)")
    return QueryIn(text=query, relevant=relevant, grades=grades, external_id=str(external))


def evaluation_import(
    *,
    kb: KnowledgeBase,
    name: str,
    chunks: Iterable[bytes],
    user: Any = None,
    source: str = Judgement.Source.IMPORT,
) -> tuple[EvaluationSet, AddResult]:
    """Import a JSON Lines file into the set ``name`` (created when new)."""
    queries, where = _jsonl_queries(chunks)
    with transaction.atomic():
        evaluation_set = evaluation_set_get_or_create(kb=kb, name=name, user=user)
        result = evaluation_queries_add(
            evaluation_set=evaluation_set,
            queries=queries,
            source=source,
            user=user,
            errors_prefix=where,
        )
    evaluation_set.refresh_from_db()
    return evaluation_set, result


@transaction.atomic
def judgement_mark(
    *,
    kb: KnowledgeBase,
    set_name: str,
    query: str,
    document_id: int,
    grade: int,
    record_id: str = "",
    chunk_id: str = "",
    user: Any = None,
) -> Judgement:
    """One click in the playground: this result (its document, or its record) answers the
    query (grade >= 1) or does not (0). The set and the query are created as needed."""
    if grade not in EVAL_GRADE:
        raise ValidationError(EVAL_GRADE.describe(), {"field": "grade"})
    text = " ".join((query or "").split())
    if not text or len(text) > QUERY_MAX_CHARS:
        raise ValidationError(
            f"the query must be 1 to {QUERY_MAX_CHARS} characters", {"field": "query"}
        )
    if not Document.objects.filter(knowledge_base=kb, pk=document_id).exists():
        raise NotFound(f"there is no document {document_id} in this knowledge base")
    if len(record_id) > 200 or len(chunk_id) > 64:
        raise ValidationError("record_id or chunk_id is too long", {"field": "record_id"})
    evaluation_set = evaluation_set_get_or_create(kb=kb, name=set_name, user=user)
    evaluation_set = EvaluationSet.objects.select_for_update().get(pk=evaluation_set.pk)
    row, created = EvaluationQuery.objects.get_or_create(evaluation_set=evaluation_set, text=text)
    if created and evaluation_set.queries.count() > EVAL_QUERIES.high:
        raise ValidationError(
            f"an evaluation set holds at most {EVAL_QUERIES.high} queries", {"field": "query"}
        )
    judgement, _ = Judgement.objects.update_or_create(
        query=row,
        document_id=document_id,
        record_id=record_id,
        defaults={
            "grade": grade,
            "chunk_id": chunk_id,
            "source": Judgement.Source.PLAYGROUND,
            "created_by": user if getattr(user, "pk", None) else None,
        },
    )
    EvaluationSet.objects.filter(pk=evaluation_set.pk).update(version=F("version") + 1)
    return judgement


def playground_marks(*, kb: KnowledgeBase, set_name: str, query: str) -> dict[Unit, int]:
    """The grades already given to this query's units in a set (for the playground)."""
    text = " ".join((query or "").split())
    rows = Judgement.objects.filter(
        query__evaluation_set__knowledge_base=kb,
        query__evaluation_set__name=set_name,
        query__text=text,
    ).values_list("document_id", "record_id", "grade")
    return {(doc, record): grade for doc, record, grade in rows}


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


# --- running and comparing -------------------------------------------------------------


def _judged(evaluation_set: EvaluationSet) -> list[tuple[EvaluationQuery, dict[Unit, int]]]:
    """The set's queries with at least one relevant unit, each with its grades."""
    grades: dict[int, dict[Unit, int]] = {}
    for query_id, document_id, record, grade in Judgement.objects.filter(
        query__evaluation_set=evaluation_set
    ).values_list("query_id", "document_id", "record_id", "grade"):
        grades.setdefault(query_id, {})[(document_id, record)] = grade
    queries = evaluation_set.queries.filter(pk__in=list(grades)).order_by("pk")
    return [(q, grades[q.pk]) for q in queries if any(g > 0 for g in grades[q.pk].values())]


def evaluation_run(
    *, evaluation_set: EvaluationSet, generation: Generation, user: Any = None
) -> EvaluationRun:
    """Measure a generation on a set: every mode (hybrid with the default fusion) ranks
    each query as a search does; nDCG@10, recall@10, recall@100 and MRR per query and
    their means. Stored with the generation."""
    if generation.knowledge_base_id != evaluation_set.knowledge_base_id:
        raise ValidationError("the generation belongs to another knowledge base")
    if generation.status not in Generation.SEARCHABLE:
        raise Conflict(
            f"generation {generation.number} is {generation.status}: its files are gone",
            {"generation": generation.number},
        )
    judged = _judged(evaluation_set)
    if not judged:
        raise Conflict(
            f"evaluation set {evaluation_set.name!r} has no query with a relevant document yet",
            {"set": evaluation_set.name},
        )
    started = time.perf_counter()
    store = generation_reader(generation)
    units_of: dict[str, tuple[int, str]] = {}
    titles: dict[Unit, str] = {}
    per_query: list[dict[str, Any]] = []
    totals: dict[str, list[dict[str, float]]] = {mode: [] for mode in SEARCH_MODES}
    for query, grades in judged:
        by_record = {doc for doc, record in grades if record}
        modes: dict[str, Any] = {}
        for mode in SEARCH_MODES:
            params = SearchParams(
                query=query.text, mode=mode, limit=EVAL_POOL, fusion=FusionParams(DEFAULT_FUSION)
            )
            hits, _exact = ranked_hits(generation, store, params, EVAL_POOL, {})
            _learn_units(store, [h.chunk_id for h in hits], units_of, titles)
            ranked = first_occurrences(
                _unit(units_of.get(h.chunk_id), by_record) for h in hits if h.chunk_id in units_of
            )
            metrics = query_metrics(ranked, grades)
            totals[mode].append(metrics)
            modes[mode] = {
                **{k: round(v, 4) for k, v in metrics.items()},
                # [document id, record, title]: the unit and what a person calls it
                "top": [[*u, titles.get(u, "")] for u in ranked[:TOP_KEPT]],
            }
        per_query.append({"id": query.pk, "query": query.text, "modes": modes})
    means = {
        mode: {k: round(v, 4) for k, v in mean_metrics(rows).items()}
        for mode, rows in totals.items()
    }
    return EvaluationRun.objects.create(
        evaluation_set=evaluation_set,
        generation=generation,
        set_version=evaluation_set.version,
        fusion=DEFAULT_FUSION,
        queries=len(judged),
        metrics=means,
        per_query=per_query,
        seconds=time.perf_counter() - started,
        created_by=user if getattr(user, "pk", None) else None,
    )


def _learn_units(
    store: Any,
    chunk_ids: list[str],
    units_of: dict[str, tuple[int, str]],
    titles: dict[Unit, str],
) -> None:
    missing = [c for c in chunk_ids if c not in units_of]
    if not missing:
        return
    for row in store.vectors.fetch(missing, ["document_id", "record_id", "title"]).values():
        document_id, record = int(row["document_id"]), row.get("record_id") or ""
        units_of[row["id"]] = (document_id, record)
        titles.setdefault((document_id, record), (row.get("title") or "")[:200])


def _unit(found: tuple[int, str] | None, by_record: set[int]) -> Unit:
    assert found is not None
    document_id, record = found
    return (document_id, record) if document_id in by_record else (document_id, "")


@dataclass(frozen=True)
class QueryDelta:
    query: str
    a: dict[str, Any]  # the mode's metrics and "top" in run a
    b: dict[str, Any]
    delta: float  # b - a on the compared metric


@dataclass(frozen=True)
class Comparison:
    run_a: EvaluationRun
    run_b: EvaluationRun
    mode: str
    metric: str
    better: list[QueryDelta]
    worse: list[QueryDelta]
    unchanged: int


def evaluation_compare(
    *, run_a: EvaluationRun, run_b: EvaluationRun, mode: str = "hybrid", metric: str = "ndcg@10"
) -> Comparison:
    """Per query, which got better and which got worse from run a to run b (largest
    changes first), with both top lists for a side-by-side view."""
    if mode not in SEARCH_MODES or metric not in METRIC_LABELS:
        raise ValidationError(f"unknown mode or metric: {mode} {metric}", {"field": "metric"})
    b_rows = {row["query"]: row for row in run_b.per_query}
    better: list[QueryDelta] = []
    worse: list[QueryDelta] = []
    unchanged = 0
    for row in run_a.per_query:
        other = b_rows.get(row["query"])
        if other is None:
            continue
        a, b = row["modes"][mode], other["modes"][mode]
        delta = round(b[metric] - a[metric], 4)
        item = QueryDelta(row["query"], a, b, delta)
        if delta > 0:
            better.append(item)
        elif delta < 0:
            worse.append(item)
        else:
            unchanged += 1
    better.sort(key=lambda d: -d.delta)
    worse.sort(key=lambda d: d.delta)
    return Comparison(run_a, run_b, mode, metric, better, worse, unchanged)


def latest_run(evaluation_set: EvaluationSet, generation: Generation) -> EvaluationRun | None:
    return (
        EvaluationRun.objects.filter(evaluation_set=evaluation_set, generation=generation)
        .order_by("-created_at", "-id")
        .first()
    )


# --- the quality gate --------------------------------------------------------------------


def generation_quality_gate(*, generation: Generation, actor: Any = None) -> bool | None:
    """Evaluate the KB's sets on a new generation and on the active one; a regression is
    any gated metric ("mode:metric" in the KB's quality gate) falling by more than its
    allowance on any set. The verdict and the numbers are recorded on the generation;
    None when there is nothing to compare (no judged set, no other active generation)."""
    kb = generation.knowledge_base
    kb.refresh_from_db()
    active = kb.active_generation
    sets = [s for s in evaluation_sets_of(kb) if s.judged_count]  # type: ignore[attr-defined]
    gate = dict(kb.quality_gate or {})
    report: dict[str, Any] = {
        "gate": gate,
        "active_generation": active.number if active else None,
        "sets": [],
    }
    if not sets or not gate or active is None or active.pk == generation.pk:
        report["note"] = (
            "no evaluation set with judged queries"
            if not sets
            else "no quality gate set"
            if not gate
            else "no other active generation to compare with"
        )
        lifecycle.generation_quality_record(
            generation=generation, passed=None, report=report, actor=actor
        )
        return None
    passed = True
    for evaluation_set in sets:
        new = evaluation_run(evaluation_set=evaluation_set, generation=generation, user=actor)
        base = evaluation_run(evaluation_set=evaluation_set, generation=active, user=actor)
        failures = []
        for key, allowed in sorted(gate.items()):
            mode, _, metric = key.partition(":")
            before, after = base.metrics[mode][metric], new.metrics[mode][metric]
            drop = before - after
            if drop > float(allowed) + 1e-9:
                failures.append(
                    {
                        "metric": key,
                        "active": before,
                        "new": after,
                        "drop": round(drop, 4),
                        "allowed": allowed,
                        "text": f"{gate_label(key)} {before:.3f} -> {after:.3f} "
                        f"(-{drop:.3f}, at most -{float(allowed):.3f})",
                    }
                )
        passed = passed and not failures
        report["sets"].append(
            {
                "name": evaluation_set.name,
                "queries": new.queries,
                "active": base.metrics,
                "new": new.metrics,
                "active_run": base.pk,
                "new_run": new.pk,
                "failures": failures,
            }
        )
    lifecycle.generation_quality_record(
        generation=generation, passed=passed, report=report, actor=actor
    )
    return passed
