"""Evaluation sets: queries with the units that answer them, built from JSON Lines, the
API and the playground's marks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from knowledge_bases.models import Document, KnowledgeBase
from ragstudio.core.bounds import (
    EVAL_GRADE,
    EVAL_IMPORT_MAX_BYTES,
    EVAL_JUDGEMENTS_PER_QUERY,
    EVAL_LINE_MAX_BYTES,
    EVAL_QUERIES,
    EVAL_SETS,
    QUERY_MAX_CHARS,
)
from ragstudio.core.errors import Conflict, NotFound, ValidationError
from search.models import (
    EVALSET_NAME_PATTERN,
    EvaluationQuery,
    EvaluationSet,
    Judgement,
    Unit,
)

TARGET_MAX_CHARS = 700  # a file name (500) and "#" a record id (200)
_NAME = re.compile(EVALSET_NAME_PATTERN)


@dataclass(frozen=True)
class Mark:
    judgement: Judgement
    query_created: bool  # the query was new to the set


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
    text = EvaluationQuery.normalise(query.text)
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
    new_texts = {EvaluationQuery.normalise(q.text) for q, _ in resolved} - set(existing)
    if len(existing) + len(new_texts) > EVAL_QUERIES.high:
        raise ValidationError(
            f"an evaluation set holds at most {EVAL_QUERIES.high} queries "
            f"({len(existing)} there, {len(new_texts)} new)",
            {"field": "queries"},
        )
    result = AddResult()
    creator = user if getattr(user, "pk", None) else None
    for query, units in resolved:
        text = EvaluationQuery.normalise(query.text)
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
) -> Mark:
    """One click in the playground: this result (its document, or its record) answers the
    query (grade >= 1) or does not (0). The set and the query are created as needed."""
    if grade not in EVAL_GRADE:
        raise ValidationError(EVAL_GRADE.describe(), {"field": "grade"})
    text = EvaluationQuery.normalise(query)
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
    return Mark(judgement, query_created=created)
