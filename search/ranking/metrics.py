"""Retrieval metrics over one ranked list of units (documents, or records within a
document) and a query's graded judgements (pure functions, no I/O).

A unit is relevant when its grade is above 0. nDCG uses the grades as linear gains
(``grade / log2(rank + 1)``), normalised by the ideal ordering of the judged units; recall
is the share of the relevant units found in the top k; MRR is the reciprocal rank of the
first relevant unit within ``MRR_DEPTH`` (0 when none is there)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from ragstudio.core.vocabulary import METRICS

Unit = TypeVar("Unit", bound=Hashable)

MRR_DEPTH = 100


def ndcg_at(ranked: Sequence[Unit], grades: Mapping[Unit, int], k: int = 10) -> float:
    dcg = sum(grades.get(u, 0) / math.log2(i + 2) for i, u in enumerate(ranked[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[Unit], grades: Mapping[Unit, int], k: int) -> float:
    relevant = {u for u, g in grades.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def reciprocal_rank(ranked: Sequence[Unit], grades: Mapping[Unit, int]) -> float:
    for i, unit in enumerate(ranked[:MRR_DEPTH], start=1):
        if grades.get(unit, 0) > 0:
            return 1.0 / i
    return 0.0


def query_metrics(ranked: Sequence[Unit], grades: Mapping[Unit, int]) -> dict[str, float]:
    """Every metric of one query's ranking."""
    return {
        "ndcg@10": ndcg_at(ranked, grades, 10),
        "recall@10": recall_at(ranked, grades, 10),
        "recall@100": recall_at(ranked, grades, 100),
        "mrr": reciprocal_rank(ranked, grades),
    }


def mean_metrics(per_query: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries (0 for none)."""
    rows = list(per_query)
    if not rows:
        return {name: 0.0 for name in METRICS}
    return {name: sum(r[name] for r in rows) / len(rows) for name in METRICS}


def first_occurrences(keys: Iterable[Unit]) -> list[Unit]:
    """A ranking of chunks as a ranking of their units: each unit at its best chunk's
    place."""
    return list(dict.fromkeys(keys))
