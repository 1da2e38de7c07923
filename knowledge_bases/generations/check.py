"""The structural check a generation passes before it may serve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from ingestion.embedders import LOCAL_PROVIDERS, parse_spec
from knowledge_bases.generations import states
from knowledge_bases.generations.storage import generation_store
from knowledge_bases.models import Document, Generation
from search.stores.generation import GenerationStore

S = Generation.Status


def expected_chunks(generation: Generation) -> int:
    """What the database says the generation should hold: the indexed documents' chunks for
    the generation uploads go to, the recorded count for any other."""
    kb = generation.knowledge_base
    first_build = generation.status == S.BUILDING and kb.active_generation_id is None
    if kb.active_generation_id == generation.pk or first_build:
        total = Document.objects.filter(
            knowledge_base=kb, status=Document.Status.INDEXED
        ).aggregate(n=Sum("chunk_count"))["n"]
        return int(total or 0)
    return generation.chunk_count


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    detail: str


def generation_check(
    *, generation: Generation, store: GenerationStore | None = None
) -> list[CheckItem]:
    """Verify a generation before it may serve: counts and ids agree between the database,
    LanceDB and tantivy; the embedder and dimensions match; a sample search works. The
    result is stored on the generation. ``store``: the handle its build wrote through."""
    store = store or generation_store(generation)
    items: list[CheckItem] = []
    expected = expected_chunks(generation)
    vectors, bm25 = store.vectors.count(), store.bm25.count()
    items.append(
        CheckItem(
            "counts",
            expected == vectors == bm25 and expected > 0,
            f"database {expected}, LanceDB {vectors}, tantivy {bm25}",
        )
    )
    vector_ids, bm25_ids = store.vectors.ids(), store.bm25.ids()
    items.append(
        CheckItem(
            "ids",
            vector_ids == bm25_ids,
            "identical"
            if vector_ids == bm25_ids
            else f"{len(vector_ids - bm25_ids)} only in LanceDB, "
            f"{len(bm25_ids - vector_ids)} only in tantivy",
        )
    )
    fingerprint = generation.embedder_fingerprint
    spec = parse_spec(generation.embedder) if generation.embedder else None
    same_model = (
        spec is not None
        and fingerprint.startswith(f"{spec.provider}:")
        and (spec.provider in LOCAL_PROVIDERS or spec.model in fingerprint)
    )
    items.append(
        CheckItem(
            "embedder",
            same_model,
            f"{fingerprint or 'no fingerprint recorded'} (generation built for "
            f"{generation.embedder or 'no embedder'})",
        )
    )
    sample = store.vectors.sample(1, columns=["id", "text", "vector"])
    if sample:
        row = sample[0]
        dims_ok = len(row["vector"]) == generation.dimensions
        items.append(
            CheckItem(
                "dimensions", dims_ok, f"{len(row['vector'])} (expected {generation.dimensions})"
            )
        )
        nearest = store.vectors.vector_search(row["vector"], 1)
        vector_ok = bool(nearest) and nearest[0][0] == row["id"]
        # Does BM25 match the row at all? Its own words, deep enough that near-duplicate
        # chunks ranked above it do not hide it.
        words = [w for w in row["text"].split() if w.isalnum()][:30]
        lexical = store.bm25.search(" ".join(words), k=1000) if words else []
        items.append(
            CheckItem(
                "sample search",
                vector_ok and row["id"] in lexical,
                f"vector search finds its own row: {vector_ok}; "
                f"BM25 finds it: {row['id'] in lexical}",
            )
        )
    else:
        items.append(CheckItem("sample search", False, "the generation holds no rows"))
    Generation.objects.filter(pk=generation.pk).update(
        check_passed=all(i.ok for i in items),
        check_report=[{"name": i.name, "ok": i.ok, "detail": i.detail} for i in items],
        checked_at=timezone.now(),
    )
    generation.refresh_from_db()
    return items


def quality_summary(report: dict) -> str:
    """The failures of a quality report in one line, for people: "set 'claims': hybrid
    nDCG@10 0.812 -> 0.701 (-0.111, at most -0.010)"."""
    parts = [
        f"set {entry['name']!r}: {failure['text']}"
        for entry in report.get("sets", [])
        for failure in entry.get("failures", [])
    ]
    return "; ".join(parts)


def generation_quality_record(
    *, generation: Generation, passed: bool | None, report: dict, actor: Any = None
) -> None:
    """The quality gate's verdict on a generation: None (nothing to compare), passed, or a
    regression, which then needs an override to promote (recorded as an event)."""
    Generation.objects.filter(pk=generation.pk).update(
        quality_passed=passed, quality_report=report, quality_checked_at=timezone.now()
    )
    generation.refresh_from_db()
    if passed is False:
        states.remark(
            generation, actor=actor, note="quality regression: " + quality_summary(report)
        )
