"""Running an evaluation set on a generation: every mode ranks each query as a search
does, and nDCG@10, recall@10, recall@100 and MRR are kept per query and overall."""

from __future__ import annotations

import time
from typing import Any

from knowledge_bases.generations import generation_reader
from knowledge_bases.models import Generation
from ragstudio.core.errors import Conflict, ValidationError
from ragstudio.core.vocabulary import DEFAULT_FUSION, SEARCH_MODES
from search.models import EvaluationRun, EvaluationSet, Unit
from search.ranking.fusion import FusionParams
from search.ranking.metrics import first_occurrences, mean_metrics, query_metrics
from search.ranking.results import SearchParams
from search.selectors import judged_queries
from search.services import ranked_hits

# Chunks each mode ranks per query: enough for 100 distinct units in most cases.
EVAL_POOL = 300
TOP_KEPT = 10  # units kept per query and mode, for side-by-side comparisons


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
    judged = judged_queries(evaluation_set)
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
