"""Two runs of one set compared query by query: which got better, which got worse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knowledge_bases.models import KnowledgeBase
from ragstudio.core.errors import ValidationError
from ragstudio.core.vocabulary import METRIC_LABELS, SEARCH_MODES
from search.models import EvaluationRun, EvaluationSet
from search.selectors import document_names, judgement_grades, latest_runs


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


def _side(
    item: QueryDelta,
    top: list[list[Any]],
    grades: dict[tuple[str, int, str], int],
    names: dict[int, str],
) -> list[dict[str, Any]]:
    out = []
    for doc, record, *title in top[:5]:
        name = names.get(doc, f"document {doc}") + (f"#{record}" if record else "")
        out.append(
            {
                "label": title[0] if title and title[0] else name,
                "source": name,
                "relevant": grades.get((item.query, doc, record), 0) > 0
                or grades.get((item.query, doc, ""), 0) > 0,
            }
        )
    return out


def comparison_detail(
    *, kb: KnowledgeBase, evaluation_set: EvaluationSet, numbers: tuple[int, int]
) -> dict[str, Any]:
    """Two generations' latest runs of a set, compared query by query, with each side's
    top 5 named and marked relevant or not: what the quality page shows."""
    run_a, run_b = latest_runs(kb=kb, evaluation_set=evaluation_set, numbers=numbers)
    comparison = evaluation_compare(run_a=run_a, run_b=run_b)
    grades = judgement_grades(evaluation_set)
    ids = {
        unit[0]
        for item in comparison.better + comparison.worse
        for side in (item.a, item.b)
        for unit in side["top"]
    }
    names = document_names(kb, ids)

    def rows(items: list[QueryDelta]) -> list[dict[str, Any]]:
        return [
            {
                "item": i,
                "top_a": _side(i, i.a["top"], grades, names),
                "top_b": _side(i, i.b["top"], grades, names),
            }
            for i in items
        ]

    return {
        "set": evaluation_set,
        "a": run_a,
        "b": run_b,
        "better": rows(comparison.better),
        "worse": rows(comparison.worse),
        "unchanged": comparison.unchanged,
    }
