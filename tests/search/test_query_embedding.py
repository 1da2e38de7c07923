"""A search's query is embedded on one thread by default (RAGSTUDIO_QUERY_EMBED_THREADS):
spread over every core, its few words gained less than they cost the BM25 and vector
searches running beside it (docs/benchmarks.md), while documents keep every core."""

from __future__ import annotations

import pytest

from ingestion.embedders import get_embedder
from knowledge_bases.generations import embedder_get, embedding, query_embedder_get


def _threads(embedder) -> int:  # type: ignore[no-untyped-def]
    return int(embedder._model.model.model.get_session_options().intra_op_num_threads)


def test_queries_get_a_one_thread_model_documents_keep_theirs(settings) -> None:
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "EMBED_THREADS": 2, "QUERY_EMBED_THREADS": 1}
    query, documents = query_embedder_get("local"), embedder_get("local")
    assert query is not documents
    assert (_threads(query), _threads(documents)) == (1, 2)
    # The same model, the same vectors: only how its work is spread differs.
    assert (query.embed_batch(["glacier"]) == documents.embed_batch(["glacier"])).all()
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "QUERY_EMBED_THREADS": 2}
    assert query_embedder_get("local") is embedder_get("local")  # agreeing: loaded once


@pytest.mark.django_db
def test_a_search_embeds_its_query_with_the_query_model(monkeypatch, settings) -> None:
    from tests.factories import make_kb, make_user

    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "EMBED_THREADS": 2, "QUERY_EMBED_THREADS": 1}
    kb = make_kb(make_user(), "q", embedder="local")
    from ragstudio.testing.generations import make_generation

    generation = make_generation(kb, "active", rows=2)
    asked: list[int | None] = []

    def recording(spec, config):  # type: ignore[no-untyped-def]
        asked.append(config.threads)
        return get_embedder(spec, config)

    monkeypatch.setattr(embedding, "get_embedder", recording)
    embedding.query_cache().clear()
    embedding.query_vector(generation, "a question nobody asked before")
    assert asked == [1]
