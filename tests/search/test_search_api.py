"""The search API end to end: real jobs into real LanceDB + tantivy, the bundled model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from ingestion.jobs import run_job_and_queue
from knowledge_bases.generations import generation_store, query_cache
from knowledge_bases.models import ApiToken, Generation, KnowledgeBase
from ragstudio.core.vocabulary import DEFAULT_FUSION, FUSION_METHODS
from ragstudio.testing.generations import make_generation
from tests.factories import make_kb, make_user, upload
from tests.helpers import make_pdf

pytestmark = pytest.mark.django_db

RECORDS = [
    (
        "photo",
        "Photosynthesis",
        "Plants convert sunlight into chemical energy through "
        "photosynthesis. Chlorophyll in the chloroplasts absorbs light.",
        {"topic": "biology", "year": 2020, "tags": ["plants", "energy"]},
    ),
    (
        "neuro",
        "Neurons",
        "Neurons transmit electrical signals across synapses using "
        "neurotransmitters such as dopamine.",
        {"topic": "biology", "year": 2021},
    ),
    (
        "volcano",
        "Volcanoes",
        "Volcanic eruptions release magma, ash and gases from beneath the crust of the earth.",
        {"topic": "geology", "year": 2019},
    ),
    (
        "hostile",
        "Odd values",
        "A record whose topic looks like an injection attempt, stored as plain data.",
        {"topic": "' OR 1=1 --", "year": 2022},
    ),
    (
        "tides",
        "Tides",
        "Ocean tides rise and fall with the gravitational pull of the moon "
        "and the sun <b>bold</b> & more.",
        {"topic": "geology", "year": 2020},
    ),
]


def _jsonl() -> bytes:
    lines = [
        json.dumps({"id": rid, "title": title, "text": text, "metadata": meta})
        for rid, title, text, meta in RECORDS
    ]
    return "\n".join(lines).encode()


def _ingest(kb: KnowledgeBase, files: list[tuple[str, bytes]]) -> None:
    result = upload(kb, files)
    assert result.job is not None
    run_job_and_queue(result.job.pk)
    kb.refresh_from_db()


@pytest.fixture
def kb(alice) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "science", chunk_size=128, chunk_overlap=0)
    _ingest(
        kb,
        [
            ("records.jsonl", _jsonl()),
            (
                "paper.pdf",
                make_pdf(["Intro page.", "Mitochondria are the powerhouse of the cell."]),
            ),
        ],
    )
    assert kb.active_generation is not None
    return kb


def search(client: Client, slug: str = "science", **body: Any):  # type: ignore[no-untyped-def]
    return client.post(f"/api/kbs/{slug}/search", body, content_type="application/json")


def titles(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    return [r["citation"]["title"] for r in response.json()["results"]]


def test_each_mode_finds_the_passage_it_should(alice, kb, client_for) -> None:
    client = client_for(alice)
    # Paraphrase with no shared keyword: only the vector engine can get it.
    assert (
        titles(search(client, query="how do green leaves turn light into food", mode="vector"))[0]
        == "Photosynthesis"
    )
    assert titles(search(client, query="volcanic magma", mode="lexical"))[0] == "Volcanoes"
    # Stemming: "eruption" finds "eruptions".
    assert titles(search(client, query="eruption", mode="lexical")) == ["Volcanoes"]
    for fusion in FUSION_METHODS:
        assert (
            titles(search(client, query="moon gravity and ocean tides", fusion=fusion))[0]
            == "Tides"
        )


def test_response_carries_generation_timing_scores_and_citations(alice, kb, client_for) -> None:
    body = search(client_for(alice), query="mitochondria powerhouse", mode="lexical").json()
    assert body["generation"] == kb.active_generation.number and body["mode"] == "lexical"
    assert body["took_ms"] > 0 and body["fusion"] is None and body["exact_vector_search"] is None
    hit = body["results"][0]
    assert "Mitochondria" in hit["content"]
    assert hit["citation"]["filename"] == "paper.pdf" and hit["citation"]["page"] == 2
    assert hit["citation"]["chunk"] >= 1 and hit["citation"]["chunks"] >= hit["citation"]["chunk"]
    assert (
        hit["score"] > 0
        and hit["chunk_id"]
        and hit["document_id"] == hit["citation"]["document_id"]
    )


def test_snippets_mark_stemmed_query_terms_and_escape_html(alice, kb, client_for) -> None:
    hit = search(client_for(alice), query="tide", mode="lexical").json()["results"][0]
    assert "<mark>tides</mark>" in hit["snippet"]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in hit["snippet"]
    assert "<b>" not in hit["snippet"]
    assert hit["content"].endswith("<b>bold</b> & more.")  # content stays raw


def test_snippets_leave_stop_words_unmarked(alice, kb, client_for) -> None:
    """Stop words occur everywhere: marked, they would light up every snippet. They are
    marked only when the query has nothing else."""
    hit = search(client_for(alice), query="the tides of the moon", mode="lexical").json()
    snippet = hit["results"][0]["snippet"]
    assert "<mark>tides</mark>" in snippet
    assert "<mark>the</mark>" not in snippet.lower() and "<mark>of</mark>" not in snippet
    only = search(client_for(alice), query="the of", mode="lexical").json()["results"]
    assert any("<mark>" in r["snippet"] for r in only)


def test_explain_reports_both_engines_and_rrf_adds_reciprocal_ranks(alice, kb, client_for) -> None:
    body = search(
        client_for(alice),
        query="neurons dopamine signals",
        explain=True,
        fusion={"method": "rrf", "k": 10},
    ).json()
    top = body["results"][0]
    assert top["citation"]["title"] == "Neurons"
    e = top["explain"]
    assert e["rank"] == 1 and e["vector_rank"] and e["bm25_rank"]
    assert -1 <= e["vector_score"] <= 1 and e["bm25_score"] > 0
    assert top["score"] == pytest.approx(1 / (10 + e["vector_rank"]) + 1 / (10 + e["bm25_rank"]))
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_weighted_fusion_follows_its_weights(alice, kb, client_for) -> None:
    client = client_for(alice)
    query = "how do green leaves turn light into food"  # vector knows, BM25 barely
    vector_only = search(
        client,
        query=query,
        fusion={"method": "weighted", "vector_weight": 1, "bm25_weight": 0},
        explain=True,
    ).json()
    assert vector_only["results"][0]["citation"]["title"] == "Photosynthesis"
    for weights, engine in (((1, 0), "vector"), ((0, 1), "bm25")):
        body = search(
            client,
            query="energy from light in plants",
            fusion={"method": "weighted", "vector_weight": weights[0], "bm25_weight": weights[1]},
            explain=True,
        ).json()
        ranks = [r["explain"][f"{engine}_rank"] for r in body["results"]]
        found = [rank for rank in ranks if rank is not None]
        # The page follows the weighted engine's own order, best first at full weight...
        assert found and found[0] == 1 and found == sorted(found), (engine, ranks)
        assert body["results"][0]["score"] == pytest.approx(1.0)
        # ...and a hit only the zero-weighted engine found scores nothing, so ranks last.
        unranked = [
            r["score"] for r, rank in zip(body["results"], ranks, strict=True) if rank is None
        ]
        assert all(score == 0 for score in unranked), (engine, ranks, unranked)
        assert ranks[: len(found)] == found


def test_pagination_pages_join_into_the_full_list(alice, kb, client_for) -> None:
    client = client_for(alice)
    for mode in ("vector", "lexical", "hybrid"):
        full = [
            r["chunk_id"]
            for r in search(client, query="energy earth cell", mode=mode, limit=6).json()["results"]
        ]
        pages = []
        for offset in (0, 2, 4):
            pages += [
                r["chunk_id"]
                for r in search(
                    client, query="energy earth cell", mode=mode, limit=2, offset=offset
                ).json()["results"]
            ]
        assert pages == full, mode
    beyond = search(client, query="energy", offset=500).json()
    assert beyond["results"] == []


def test_filters_by_document_and_metadata(alice, kb, client_for) -> None:
    client = client_for(alice)
    pdf_id = kb.documents.get(original_filename="paper.pdf").pk
    jsonl_id = kb.documents.get(original_filename="records.jsonl").pk
    for mode in ("vector", "lexical", "hybrid"):
        only_pdf = search(
            client, query="energy cell", mode=mode, filters={"document_ids": [pdf_id]}
        ).json()["results"]
        assert only_pdf and {r["document_id"] for r in only_pdf} == {pdf_id}, mode
        geology = titles(
            search(
                client,
                query="earth moon magma energy",
                mode=mode,
                filters={"metadata": {"topic": "geology"}},
            )
        )
        assert set(geology) == {"Volcanoes", "Tides"}, mode
        years = titles(
            search(
                client,
                query="energy signals eruptions",
                mode=mode,
                filters={"metadata": {"year": {"in": [2021, 2019]}}},
            )
        )
        assert set(years) == {"Neurons", "Volcanoes"}, mode
        both = titles(
            search(
                client,
                query="energy",
                mode=mode,
                filters={
                    "document_ids": [jsonl_id],
                    "metadata": {"topic": "biology", "year": 2020},
                },
            )
        )
        assert both == ["Photosynthesis"], mode
        tagged = titles(
            search(client, query="energy", mode=mode, filters={"metadata": {"tags": "plants"}})
        )
        assert tagged == ["Photosynthesis"], mode


@pytest.mark.parametrize("value", ["' OR 1=1 --", "biology' OR '1'='1", 'x") OR true --', "%", "*"])
def test_hostile_filter_values_match_only_themselves(alice, kb, value: str, client_for) -> None:
    client = client_for(alice)
    store = generation_store(kb.active_generation)
    before = store.vectors.count(), store.bm25.count()
    for mode in ("vector", "lexical", "hybrid"):
        response = search(
            client,
            query="record injection attempt data",
            mode=mode,
            filters={"metadata": {"topic": value}},
        )
        assert response.status_code == 200, response.content
        found = titles(response)
        assert found == (["Odd values"] if value == "' OR 1=1 --" else []), (mode, value)
    assert (store.vectors.count(), store.bm25.count()) == before


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ('title:"neurons AND (', "Neurons"),
        ("NOT volcanic OR AND", "Volcanoes"),
        ("+chlorophyll~ ^* -", "Photosynthesis"),
        ("text:magma [1 TO", "Volcanoes"),
        ("+-~^*", None),
    ],
)
def test_query_syntax_is_never_interpreted(alice, kb, query: str, title, client_for) -> None:
    """Operators and field names are words to BM25, never syntax: the word in the query
    finds its record (NOT does not exclude it), and punctuation alone finds nothing."""
    response = search(client_for(alice), query=query, mode="lexical")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    if title is None:
        assert results == []
    else:
        assert results and results[0]["citation"]["title"] == title, results


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "x" * 2001}, "query"),
        ({"query": "   "}, None),
        ({"query": "x", "mode": "fuzzy"}, "mode"),
        ({"query": "x", "limit": 0}, "limit"),
        ({"query": "x", "limit": 101}, "limit"),
        ({"query": "x", "offset": -1}, "offset"),
        ({"query": "x", "generation": 0}, "generation"),
        ({"query": "x", "generation": "latest"}, "generation"),
        # JSON says integer or number: a boolean or a numeric string is not one.
        ({"query": "x", "generation": True}, "generation"),
        ({"query": "x", "limit": "5"}, "limit"),
        ({"query": "x", "offset": True}, "offset"),
        ({"query": "x", "fusion": {"method": "weighted", "vector_weight": "0.5"}}, "fusion"),
        (
            {"query": "x", "fusion": {"method": "weighted", "vector_weight": 0, "bm25_weight": 0}},
            "fusion",
        ),
        ({"query": "x", "fusion": {"method": "rrf", "k": 0}}, "fusion"),
        ({"query": "x", "filters": {"metadata": {"bad key!": 1}}}, "filters"),
        ({"query": "x", "filters": {"metadata": {"k": {"in": []}}}}, "filters"),
        ({"query": "x", "filters": {"metadata": {"k": {"nested": 1}}}}, "filters"),
        ({"query": "x", "filters": {"document_ids": ["one"]}}, "filters"),
        # Issue 11, case 4: 2**63 was a 500 (2**64 failed inside LanceDB).
        ({"query": "x", "filters": {"document_ids": [2**63]}}, "filters"),
        ({"query": "x", "filters": {"document_ids": [2**64]}}, "filters"),
        ({"query": "x", "filters": {"where": "1=1"}}, "filters"),
        ({"query": "x", "lmit": 5}, "lmit"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(alice, kb, body, field, client_for) -> None:
    response = search(client_for(alice), **body)
    assert response.status_code == 422, response.content
    detail = response.json()
    if field:
        assert detail["extra"]["errors"][0]["field"].startswith(field), detail
        assert field in detail["message"]


def test_sharing_and_tokens_decide_who_may_search(alice, kb, client_for) -> None:
    bob, carol = make_user("bob"), make_user("carol")
    staff = make_user("root", is_staff=True)
    assert (
        Client()
        .post("/api/kbs/science/search", {"query": "x"}, content_type="application/json")
        .status_code
        == 401
    )
    bad = Client(headers={"Authorization": "Bearer rs_nope"})
    assert search(bad, query="x").status_code == 401
    assert search(client_for(bob), query="x").status_code == 404
    kb.shared_with.add(bob)
    assert search(client_for(bob), query="tides").status_code == 200
    assert search(client_for(staff), query="tides").status_code == 200
    assert search(client_for(carol), query="tides").status_code == 404
    # Shared means read-only: bob can list documents, not change anything.
    assert client_for(bob).get("/api/kbs/science/documents").status_code == 200
    forbidden = client_for(bob).post("/api/kbs/science/generations/gc")
    assert forbidden.status_code == 403 and "read-only" in forbidden.json()["message"]
    assert [k["slug"] for k in client_for(bob).get("/api/kbs").json()] == ["science"]
    # A revoked token stops working at once.
    row, token = ApiToken.issue(user=bob)
    row.revoked_at = row.created_at
    row.save()
    assert (
        search(Client(headers={"Authorization": f"Bearer {token}"}), query="x").status_code == 401
    )


def test_a_kb_with_no_active_generation_is_409(alice, client_for) -> None:
    make_kb(alice, "empty")
    response = search(client_for(alice), "empty", query="anything")
    assert response.status_code == 409
    assert "no active generation" in response.json()["message"]


def test_an_empty_generation_gives_no_results(alice, client_for) -> None:
    kb = make_kb(alice, "hollow")
    make_generation(kb, Generation.Status.ACTIVE, rows=0)
    for mode in ("vector", "lexical", "hybrid"):
        response = search(client_for(alice), "hollow", query="anything", mode=mode)
        assert response.status_code == 200 and response.json()["results"] == [], mode


def test_search_a_numbered_generation_side_by_side(alice, kb, client_for) -> None:
    client = client_for(alice)
    other = make_generation(kb, Generation.Status.READY, rows=6)
    staged = search(client, query="protein kinase", mode="lexical", generation=other.number).json()
    assert staged["generation"] == other.number
    assert staged["results"] and all(
        r["chunk_id"].startswith(f"g{other.number}c") for r in staged["results"]
    )
    active = search(client, query="protein kinase", mode="lexical").json()
    assert active["generation"] == kb.active_generation.number
    assert search(client, query="x", generation=99).status_code == 404
    collected = make_generation(kb, Generation.Status.COLLECTED, rows=6)
    gone = search(client, query="x", generation=collected.number)
    assert gone.status_code == 409 and "collected" in gone.json()["message"]


def test_repeated_queries_skip_the_model(alice, kb, client_for) -> None:
    client = client_for(alice)
    cache = query_cache()
    cache.clear()
    first = search(client, query="chlorophyll absorbs light", mode="vector").json()
    assert (cache.hits, cache.misses) == (0, 1)
    again = search(client, query="chlorophyll absorbs light", mode="vector").json()
    assert (cache.hits, cache.misses) == (1, 1)
    assert "embed_ms" in again["timings"]
    assert [r["chunk_id"] for r in again["results"]] == [r["chunk_id"] for r in first["results"]]


def test_the_search_command_prints_results_and_json(alice, kb, capsys) -> None:
    call_command("search", "volcanic magma", kb="science", mode="lexical", limit=2)
    out = capsys.readouterr().out
    assert "generation 1 (lexical)" in out and "Volcanoes (records.jsonl" in out
    assert "**Volcanic**" in out and "**magma**" in out
    call_command("search", "volcanic magma", kb="science", json=True, limit=1)
    body = json.loads(capsys.readouterr().out)
    assert (
        body["mode"] == "hybrid" and body["fusion"] == DEFAULT_FUSION and len(body["results"]) == 1
    )
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"knowledge base .nope. not found"):
        call_command("search", "x", kb="nope")
    with pytest.raises(CommandError, match="query"):
        call_command("search", "x" * 2001, kb="science")


def test_openapi_documents_the_search_route(alice, client_for) -> None:
    schema = client_for(alice).get("/api/openapi.json").json()
    operation = schema["paths"]["/api/kbs/{slug}/search"]["post"]
    assert "hybrid" in operation["description"]
    assert {"200", "401", "404", "409", "422"} <= set(operation["responses"])


def test_generations_from_before_metadata_tokens_keep_working(alice, client_for) -> None:
    """Stores built by an older release (no meta_kv column or field) still take uploads
    and answer searches; only metadata filters ask for a rebuild."""
    import tantivy

    from ragstudio.env import rag_settings

    if rag_settings()["STORAGE_URI"]:
        pytest.skip("older releases' stores were local: the object store came later")

    from search.stores.lancedb_store import chunk_schema, connect

    kb = make_kb(alice, "legacy")
    generation = make_generation(kb, Generation.Status.ACTIVE, rows=0)
    Generation.objects.filter(pk=generation.pk).update(embedder_fingerprint="")  # any model
    schema = chunk_schema(generation.dimensions)
    old = schema.remove(schema.get_field_index("meta_kv"))
    connect(str(generation_store(generation).vectors.uri)).create_table(
        generation.table_name, schema=old
    )
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("document_id", stored=True, indexed=True, fast=True)
    builder.add_text_field("title", stored=True, tokenizer_name="en_stem")
    builder.add_text_field("text", stored=True, tokenizer_name="en_stem")
    bm25 = generation_store(generation).bm25.path
    bm25.mkdir(parents=True)
    tantivy.Index(builder.build(), path=str(bm25))

    _ingest(kb, [("records.jsonl", _jsonl())])
    client = client_for(alice)
    for mode in ("vector", "lexical", "hybrid"):
        assert "Volcanoes" in titles(search(client, "legacy", query="volcanic magma", mode=mode))
    doc = kb.documents.get()
    assert titles(search(client, "legacy", query="tides", filters={"document_ids": [doc.pk]}))
    refused = search(client, "legacy", query="tides", filters={"metadata": {"topic": "geology"}})
    assert refused.status_code == 409 and "rebuild it" in refused.json()["message"]


def test_the_largest_document_id_is_searched_not_refused(alice, kb, client_for) -> None:
    for mode in ("vector", "lexical", "hybrid"):
        response = search(
            client_for(alice), query="cell", mode=mode, filters={"document_ids": [2**63 - 1]}
        )
        assert response.status_code == 200, response.content
        assert response.json()["results"] == []


def test_an_archived_generation_does_not_answer_with_documents_deleted_since(
    alice, kb, client_for
) -> None:
    from ingestion.services import document_delete
    from knowledge_bases.generations import generation_check
    from knowledge_bases.services import generation_promote, generation_rebuild_start

    job = generation_rebuild_start(kb=kb, enqueue=False, user=alice)
    run_job_and_queue(job.pk)
    generation_check(generation=kb.generations.get(number=2))
    generation_promote(kb=kb, number=2)
    kb.refresh_from_db()
    assert kb.active_generation.number == 2
    paper = kb.documents.get(original_filename="paper.pdf")
    document_delete(kb=kb, document_id=paper.pk)
    client = client_for(alice)
    for generation in ("active", 1):
        response = search(client, query="mitochondria powerhouse cell", generation=generation)
        assert response.status_code == 200, response.content
        results = response.json()["results"]
        assert all(r["document_id"] != paper.pk for r in results), generation
        assert all(r["citation"]["filename"] for r in results), generation
