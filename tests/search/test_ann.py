"""The ANN index on real LanceDB: built past the threshold, kept up to date, recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragstudio.core.types import Chunk, EmbeddedChunk, content_hash
from search.stores.lancedb_store import LanceChunkTable

DIM = 32


def rows(start: int, n: int, rng: np.random.Generator) -> list[EmbeddedChunk]:
    # Clustered vectors, as embeddings are: 20 centres plus noise.
    centres = np.random.default_rng(0).normal(size=(20, DIM))
    out = []
    for i in range(start, start + n):
        vec = centres[i % 20] + 0.6 * rng.normal(size=DIM)
        text = f"row {i}"
        chunk = Chunk(f"r{i}", i, 0, text, content_hash(text), 2)
        out.append(EmbeddedChunk(chunk, (vec / np.linalg.norm(vec)).astype(np.float32), new=True))
    return out


def test_index_is_built_past_the_threshold_and_keeps_recall(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    table = LanceChunkTable(str(tmp_path / "lance"), "t", DIM)
    table.write(rows(0, 1500, rng))
    assert table.ensure_vector_index(min_rows=2000) == "below-threshold"
    assert not table.has_vector_index()
    table.write(rows(1500, 1000, rng))
    assert table.fragment_count() == 2  # a fragment per write
    assert table.ensure_vector_index(min_rows=2000) == "built"
    assert table.has_vector_index()
    # Compacted before the index was built over it: one fragment, no row lost.
    assert table.fragment_count() == 1 and table.count() == 2500
    assert table.ensure_vector_index(min_rows=2000) == "current"

    queries = [r.vector for r in rows(10_000, 30, rng)]
    recalls = []
    for q in queries:
        exact = {i for i, _ in table.vector_search(q, 10, exact=True)}
        approx = {i for i, _ in table.vector_search(q, 10, nprobes=20, refine_factor=5)}
        recalls.append(len(exact & approx) / 10)
    assert np.mean(recalls) >= 0.95

    # Rows added after the index are still found (searched flat and merged) ...
    new = rows(2500, 50, rng)
    table.write(new)
    assert table.vector_search(new[7].vector, 1)[0][0] == new[7].chunk.id
    # ... and folded into the index once they pass a tenth of it.
    table.write(rows(2550, 300, rng))
    assert table.ensure_vector_index(min_rows=2000) == "updated"


@pytest.mark.parametrize("where", ["document_id IN (3, 5)", "document_id IN (2400)"])
def test_filtered_vector_search_returns_only_matching_rows(tmp_path: Path, where: str) -> None:
    rng = np.random.default_rng(2)
    table = LanceChunkTable(str(tmp_path / "lance"), "t", DIM)
    data = rows(0, 2500, rng)
    table.write(data)
    table.ensure_vector_index(min_rows=2000)
    hits = table.vector_search(data[3].vector, 10, where=where)
    allowed = {f"r{d}" for d in (3, 5, 2400)}
    assert hits and {i for i, _ in hits} <= allowed


@pytest.mark.django_db
def test_a_job_that_takes_the_table_past_the_threshold_builds_the_index() -> None:
    import json

    from django.conf import settings as django_settings

    from ingestion.jobs import run_job_and_queue
    from knowledge_bases.generations import generation_store
    from tests.factories import make_kb, make_user, upload

    django_settings.RAGSTUDIO = {**django_settings.RAGSTUDIO, "ANN_MIN_ROWS": 256}
    kb = make_kb(make_user(), "ann")
    small = "\n".join(json.dumps({"id": str(i), "text": f"note {i}"}) for i in range(100))
    run_job_and_queue(upload(kb, [("a.jsonl", small.encode())]).job.pk)
    kb.refresh_from_db()
    store = generation_store(kb.active_generation)
    assert store.vectors.count() == 100 and not store.vectors.has_vector_index()
    more = "\n".join(json.dumps({"id": str(i), "text": f"entry {i}"}) for i in range(200))
    run_job_and_queue(upload(kb, [("b.jsonl", more.encode())]).job.pk)
    assert store.vectors.count() == 300 and store.vectors.has_vector_index()
