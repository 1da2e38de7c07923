"""Evaluation sets: built from JSON Lines, the API and judgements; measured on a
generation; the quality gate before promotion; the rebuild plan against the real rebuild.

The retrieval tests use a slice of SciFact (tests/data/scifact-mini: 116 abstracts, 24
claims with their judged abstracts, and BM25's best unjudged abstracts as distractors)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_reader
from knowledge_bases.models import Generation, GenerationEvent, KnowledgeBase
from knowledge_bases.services import (
    generation_rebuild_plan,
    generation_rebuild_start,
    rebuild_plan_execute,
)
from ragstudio.core.errors import Conflict, ValidationError
from ragstudio.core.vocabulary import DEFAULT_FUSION
from search.evaluation import (
    EVAL_POOL,
    evaluation_import,
    evaluation_run,
    judgement_mark,
    quality_gate_measure,
)
from search.models import EvaluationSet, Judgement
from search.ranking.fusion import FusionParams
from search.ranking.results import SearchParams
from search.selectors import evaluation_set_get
from search.services import knowledge_base_search, ranked_hits
from tests.factories import make_kb, upload

pytestmark = pytest.mark.django_db(transaction=True)
MINI = Path(__file__).resolve().parents[1] / "data" / "scifact-mini"
S = Generation.Status


def _built(kb: KnowledgeBase, files: list[tuple[str, bytes]]) -> KnowledgeBase:
    job = upload(kb, files).job
    assert job is not None
    run_job_and_queue(job.pk)
    kb.refresh_from_db()
    assert kb.active_generation is not None
    return kb


@pytest.fixture
def scifact(alice):  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "claims", chunk_size=200, chunk_overlap=32)
    _built(kb, [("corpus.jsonl", (MINI / "corpus.jsonl").read_bytes())])
    evaluation_import(kb=kb, name="claims", chunks=[(MINI / "evalset.jsonl").read_bytes()])
    return kb


def _jsonl(*records: dict) -> list[bytes]:
    return ["\n".join(json.dumps(r) for r in records).encode()]


def test_a_set_names_documents_by_id_by_file_name_and_by_record(alice) -> None:
    kb = make_kb(alice, "docs")
    upload(
        kb,
        [
            ("notes.txt", b"Glaciers carve valleys."),
            ("records.jsonl", b'{"id": "r1", "text": "one"}\n{"id": "r2", "text": "two"}'),
        ],
    )
    notes = kb.documents.get(original_filename="notes.txt")
    records = kb.documents.get(original_filename="records.jsonl")
    evaluation_set, result = evaluation_import(
        kb=kb,
        name="mixed",
        chunks=_jsonl(
            {"query": "glaciers", "relevant": [notes.pk], "id": "q1"},
            {
                "query": "second record",
                "relevant": ["records.jsonl#r2"],
                "grades": {"notes.txt": 0},
            },
            {"query": "graded", "relevant": ["notes.txt"], "grades": {"notes.txt": 3}},
        ),
    )
    assert (result.queries_added, result.judgements) == (3, 4)
    units = {
        (j.query.text, j.document_id, j.record_id, j.grade)
        for j in Judgement.objects.filter(query__evaluation_set=evaluation_set)
    }
    assert units == {
        ("glaciers", notes.pk, "", 1),
        ("second record", records.pk, "r2", 1),
        ("second record", notes.pk, "", 0),
        ("graded", notes.pk, "", 3),
    }
    assert evaluation_set.queries.get(text="glaciers").external_id == "q1"
    # Importing again updates: the same query gets the new grade, nothing is duplicated.
    _set, again = evaluation_import(
        kb=kb, name="mixed", chunks=_jsonl({"query": "glaciers", "grades": {str(notes.pk): 2}})
    )
    assert (again.queries_added, again.queries_updated) == (0, 1)
    assert Judgement.objects.get(query__text="glaciers").grade == 2


def test_a_file_with_bad_lines_is_refused_whole_naming_each_line(alice) -> None:
    kb = make_kb(alice, "docs")
    upload(kb, [("a.txt", b"Alpha text."), ("b.txt", b"Beta text."), ("dup.txt", b"Gamma.")])
    body = (
        json.dumps({"query": "fine", "relevant": ["a.txt"]})
        + "\n{not json\n"
        + json.dumps({"query": "who", "relevant": ["missing.pdf"]})
        + "\n"
        + json.dumps({"query": "graded", "relevant": ["b.txt"], "grades": {"b.txt": 99}})
        + "\n"
        + json.dumps({"query": "extra", "relevant": ["a.txt"], "score": 1})
        + "\n"
        + json.dumps({"query": "   ", "relevant": ["a.txt"]})
    )
    with pytest.raises(ValidationError) as caught:
        evaluation_import(kb=kb, name="bad", chunks=[body.encode()])
    where = {e["where"]: e["message"] for e in caught.value.extra["errors"]}
    assert "not valid JSON" in where["line 2"]
    assert "unknown field(s): score" in where["line 5"]
    assert set(where) == {"line 2", "line 5"}  # lines that parse are checked next, all at once
    with pytest.raises(ValidationError) as caught:
        evaluation_import(
            kb=kb,
            name="bad",
            chunks=[body.replace("{not json\n", "").replace(', "score": 1', "").encode()],
        )
    where = {e["where"]: e["message"] for e in caught.value.extra["errors"]}
    assert "no document named 'missing.pdf'" in where["line 2"]
    assert "a grade is an integer from 0 to 10" in where["line 3"]
    assert "the query is empty" in where["line 5"]
    assert not EvaluationSet.objects.filter(name="bad").exists()  # nothing stored
    with pytest.raises(ValidationError, match="not UTF-8"):
        evaluation_import(kb=kb, name="bad", chunks=[b"\xff\xfe\x00"])


def test_an_evaluation_measures_every_mode_per_query_and_overall(scifact) -> None:
    evaluation_set = evaluation_set_get(kb=scifact, name="claims")
    run = evaluation_run(evaluation_set=evaluation_set, generation=scifact.active_generation)
    assert run.queries == 24 and run.set_version == evaluation_set.version
    assert set(run.metrics) == {"vector", "lexical", "hybrid"}
    for mode, values in run.metrics.items():
        assert set(values) == {"ndcg@10", "recall@10", "recall@100", "mrr"}, mode
        assert 0 < values["ndcg@10"] <= values["recall@100"] * 1.0001 or values["ndcg@10"] <= 1
        assert values["recall@10"] <= values["recall@100"]
    # Real retrieval on real claims: far better than chance (116 abstracts).
    assert run.metrics["hybrid"]["ndcg@10"] > 0.5
    row = run.per_query[0]
    assert set(row["modes"]) == {"vector", "lexical", "hybrid"}
    # Units are records here: the judgements name "corpus.jsonl#<id>"; each kept with its
    # title for the side-by-side view.
    top = row["modes"]["hybrid"]["top"]
    assert len(top) == 10 and all(record and title for _doc, record, title in top)
    corpus = {
        r["id"]: r["title"]
        for r in map(json.loads, (MINI / "corpus.jsonl").read_text().splitlines())
    }
    assert all(title == corpus[record] for _doc, record, title in top)
    # Each query's numbers are the means' parts.
    mean = sum(r["modes"]["hybrid"]["ndcg@10"] for r in run.per_query) / run.queries
    assert mean == pytest.approx(run.metrics["hybrid"]["ndcg@10"], abs=1e-3)


@pytest.mark.slow
def test_the_gate_passes_an_equal_rebuild_and_refuses_a_worse_one(scifact, alice) -> None:
    first = scifact.active_generation
    # An equal generation (same settings: every vector reused) passes and is promoted.
    job = generation_rebuild_start(kb=scifact, auto_promote=True, enqueue=False, user=alice)
    run_job_and_queue(job.pk)
    equal = Generation.objects.get(pk=job.generation_id)
    assert equal.quality_passed is True, equal.quality_report
    assert equal.status == S.ACTIVE
    entry = equal.quality_report["sets"][0]
    assert entry["name"] == "claims" and entry["failures"] == []
    assert entry["new"]["hybrid"]["ndcg@10"] == pytest.approx(
        entry["active"]["hybrid"]["ndcg@10"], abs=0.01
    )
    # Chunks of 16 tokens: the vectors see fragments; the gate refuses the promotion.
    job = generation_rebuild_start(
        kb=scifact, chunk_size=16, chunk_overlap=0, auto_promote=True, enqueue=False, user=alice
    )
    run_job_and_queue(job.pk)
    worse = Generation.objects.get(pk=job.generation_id)
    scifact.refresh_from_db()
    assert worse.status == S.READY and worse.check_passed is True
    assert worse.quality_passed is False
    assert scifact.active_generation_id == equal.pk  # still serving the good one
    failure = worse.quality_report["sets"][0]["failures"][0]
    assert failure["metric"] == "hybrid:ndcg@10" and failure["drop"] > 0.01
    assert "hybrid nDCG@10" in failure["text"]
    event = worse.events.order_by("-id").first()
    assert event is not None and event.note.startswith("quality regression: set 'claims'")
    assert first.pk != worse.pk


@pytest.mark.slow
def test_a_regression_is_409_with_the_metrics_until_someone_overrides_it(
    scifact, alice, client_for
) -> None:
    active = scifact.active_generation
    job = generation_rebuild_start(kb=scifact, chunk_size=16, chunk_overlap=0, enqueue=False)
    run_job_and_queue(job.pk)
    worse = Generation.objects.get(pk=job.generation_id)
    assert worse.quality_passed is False
    client = client_for(alice)
    url = f"/api/kbs/claims/generations/{worse.number}/promote"
    refused = client.post(url, content_type="application/json")
    assert refused.status_code == 409
    body = refused.json()
    assert "quality regression" in body["message"] and "hybrid nDCG@10" in body["message"]
    assert body["extra"]["quality"]["sets"][0]["failures"][0]["metric"] == "hybrid:ndcg@10"
    listed = client.get("/api/kbs/claims/generations").json()
    assert {g["number"]: g["quality_passed"] for g in listed}[worse.number] is False
    # The CLI refuses the same way, and takes the override.
    with pytest.raises(CommandError, match="quality regression"):
        call_command("generations", "claims", "promote", str(worse.number))
    ok = client.post(
        url,
        {"override_quality": "  the new chunking is what legal asked for  "},
        content_type="application/json",
    )
    assert ok.status_code == 200 and ok.json()["active"] is True
    note = worse.events.filter(to_status=S.ACTIVE).get().note
    assert note == (
        "promote despite a quality regression, override by alice: "
        "the new chunking is what legal asked for"
    )
    assert worse.events.filter(to_status=S.ACTIVE).get().actor == alice
    active.refresh_from_db()
    assert active.status == S.ARCHIVED
    # Rolled back, then promoted again from the CLI with a reason (the operator, no user).
    call_command("generations", "claims", "rollback", stdout=io.StringIO())
    out = io.StringIO()
    call_command(
        "generations",
        "claims",
        "promote",
        str(worse.number),
        "--override-quality",
        "reviewed",
        stdout=out,
    )
    assert f"generation {worse.number} is active" in out.getvalue()
    last = GenerationEvent.objects.filter(generation=worse, to_status=S.ACTIVE).order_by("-id")[0]
    assert last.note.endswith("override by the operator (CLI): reviewed") and last.actor is None


def test_a_gate_with_nothing_to_compare_does_not_block(alice) -> None:
    kb = _built(make_kb(alice, "plain"), [("a.txt", b"Alpha beta gamma. " * 20)])
    job = generation_rebuild_start(kb=kb, auto_promote=True, enqueue=False)
    run_job_and_queue(job.pk)
    new = Generation.objects.get(pk=job.generation_id)
    assert new.status == S.ACTIVE and new.quality_passed is None
    assert new.quality_report["note"] == "no evaluation set with judged queries"
    assert quality_gate_measure(generation=new)[0] is None


@pytest.mark.slow
def test_the_plan_matches_what_the_rebuild_then_does(scifact, alice) -> None:
    plan = generation_rebuild_plan(kb=scifact, chunk_size=120, chunk_overlap=16)
    changed = {c.name: (c.active, c.new) for c in plan.changes}
    assert changed == {"chunk_size": (200, 120), "chunk_overlap": (32, 16)}
    # Abstracts short enough to be one chunk either way keep their text, and their vector.
    assert plan.documents == 1 and 0 < plan.reused < plan.chunks
    assert plan.to_embed == plan.chunks - plan.reused
    assert plan.rate_chunks_per_s is not None and plan.rate_chunks_per_s > 0
    assert plan.eta_seconds is not None and plan.eta_seconds > 0 and "tokens/s" in plan.rate_basis
    assert plan.disk_bytes is not None and plan.disk_bytes > plan.chunks * 384 * 4
    job = generation_rebuild_start(
        kb=scifact, chunk_size=120, chunk_overlap=16, enqueue=False, user=alice
    )
    run_job_and_queue(job.pk)
    job = IngestionJob.objects.get(pk=job.pk)
    assert (job.total, job.skipped, job.embedded) == (plan.chunks, plan.reused, plan.to_embed)
    # The same settings again: every chunk's text has a vector now, from generation 2.
    again = generation_rebuild_plan(kb=scifact, chunk_size=120, chunk_overlap=16)
    assert (again.chunks, again.reused, again.to_embed) == (plan.chunks, plan.chunks, 0)
    assert again.eta_seconds == 0
    job = generation_rebuild_start(kb=scifact, chunk_size=120, chunk_overlap=16, enqueue=False)
    run_job_and_queue(job.pk)
    job = IngestionJob.objects.get(pk=job.pk)
    assert (job.total, job.skipped, job.embedded) == (again.chunks, again.reused, 0)
    disk = Generation.objects.get(pk=job.generation_id)
    from knowledge_bases.generations import generation_size_on_disk

    actual = generation_size_on_disk(disk, stored=True)
    assert 0.5 * actual < plan.disk_bytes < 2 * actual, (plan.disk_bytes, actual)


def test_the_plan_through_the_api_and_the_cli(scifact, alice, client_for) -> None:
    client = client_for(alice)
    response = client.post(
        "/api/kbs/claims/generations/rebuild",
        {"chunk_size": 100, "dry_run": True},
        content_type="application/json",
    )
    # Queued for a worker (planning reads every document): nothing is read in the request.
    assert response.status_code == 202, response.content
    queued = response.json()
    assert (queued["status"], queued["plan"], queued["documents"]) == ("queued", None, 1)
    assert queued["settings"]["chunk_size"] == 100 and queued["knowledge_base"] == "claims"
    # The same settings again, on the plans endpoint: the same plan, not a second one.
    again = client.post(
        "/api/kbs/claims/generations/plans", {"chunk_size": 100}, content_type="application/json"
    )
    assert again.status_code == 202 and again.json()["id"] == queued["id"]
    assert rebuild_plan_execute(queued["id"]) == "succeeded"
    assert rebuild_plan_execute(queued["id"]) == "taken"
    done = client.get(f"/api/kbs/claims/generations/plans/{queued['id']}").json()
    assert done["status"] == "succeeded" and done["finished_at"] is not None
    body = done["plan"]
    assert body["chunks"] > 0 and body["to_embed"] == body["chunks"] - body["reused"]
    assert {s["name"]: s["changed"] for s in body["settings"]}["chunk_size"] is True
    assert not IngestionJob.objects.filter(kind="rebuild").exists()  # nothing started
    assert scifact.generations.count() == 1
    out = io.StringIO()
    call_command(
        "generations",
        "claims",
        "rebuild",
        "--dry-run",
        "--json",
        "--chunk-size",
        "100",
        stdout=out,
    )
    plan = json.loads(out.getvalue())
    assert {k: plan[k] for k in ("documents", "chunks", "reused", "to_embed")} == {
        k: body[k] for k in ("documents", "chunks", "reused", "to_embed")
    }
    assert scifact.generations.count() == 1
    bad = client.post(
        "/api/kbs/claims/generations/rebuild",
        {"chunk_size": 100, "chunk_overlap": 90, "dry_run": True},
        content_type="application/json",
    )
    assert bad.status_code == 422 and "chunk overlap" in bad.json()["message"]
    assert client.get("/api/kbs/claims/generations/plans/999").status_code == 404
    # A plan whose knowledge base changed under it fails with the reason, not silently.
    gone = client.post(
        "/api/kbs/claims/generations/plans", {"chunk_size": 90}, content_type="application/json"
    ).json()
    KnowledgeBase.objects.filter(pk=scifact.pk).update(active_generation=None)
    assert rebuild_plan_execute(gone["id"]) == "failed"
    failed = client.get(f"/api/kbs/claims/generations/plans/{gone['id']}").json()
    assert failed["plan"] is None and "no active generation" in failed["error"]


def test_marks_from_the_playground_build_a_set(scifact, alice) -> None:
    doc = scifact.documents.get()
    judgement_mark(
        kb=scifact,
        set_name="marks",
        query="  insulin   resistance ",
        document_id=doc.pk,
        record_id="5850219",
        chunk_id="abc",
        grade=1,
        user=alice,
    )
    judgement_mark(
        kb=scifact,
        set_name="marks",
        query="insulin resistance",
        document_id=doc.pk,
        record_id="5850219",
        grade=0,
        user=alice,
    )
    evaluation_set = evaluation_set_get(kb=scifact, name="marks")
    (judgement,) = Judgement.objects.filter(query__evaluation_set=evaluation_set)
    assert (judgement.query.text, judgement.grade, judgement.source) == (
        "insulin resistance",
        0,
        "playground",
    )
    with pytest.raises(Conflict, match="no query with a relevant document"):
        evaluation_run(evaluation_set=evaluation_set, generation=scifact.active_generation)


def test_sets_are_bounded_per_knowledge_base_and_names_by_length(alice) -> None:
    from ragstudio.core.bounds import EVAL_SETS
    from search.evaluation import evaluation_set_create

    kb = make_kb(alice, "bounded")
    upload(kb, [("a.txt", b"Alpha text.")])
    for i in range(EVAL_SETS.high):
        evaluation_set_create(kb=kb, name=f"s{i}")
    with pytest.raises(Conflict, match=f"at most {EVAL_SETS.high} evaluation sets"):
        evaluation_set_create(kb=kb, name="one-more")
    with pytest.raises(ValidationError) as caught:
        evaluation_import(kb=kb, name="s0", chunks=_jsonl({"query": "q", "relevant": ["x" * 5000]}))
    message = caught.value.extra["errors"][0]["message"]
    assert message == "a document name is at most 700 characters"  # not the 5,000 echoed


def test_a_set_holds_a_bounded_number_of_queries_and_a_refused_import_adds_none(alice) -> None:
    """An evaluation runs in the web request: a set's size bounds how long that takes."""
    from ragstudio.core.bounds import EVAL_QUERIES

    kb = make_kb(alice, "many")
    upload(kb, [("a.txt", b"Alpha text.")])
    lines = [{"query": f"question {i}", "relevant": ["a.txt"]} for i in range(EVAL_QUERIES.high)]
    evaluation_import(kb=kb, name="big", chunks=_jsonl(*lines[:-1]))
    with pytest.raises(ValidationError, match=f"at most {EVAL_QUERIES.high} queries") as caught:
        evaluation_import(
            kb=kb,
            name="big",
            chunks=_jsonl(
                {"query": "one", "relevant": ["a.txt"]}, {"query": "two", "relevant": ["a.txt"]}
            ),
        )
    assert f"({EVAL_QUERIES.high - 1} there, 2 new)" in str(caught.value)
    big = EvaluationSet.objects.get(knowledge_base=kb, name="big")
    assert big.queries.count() == EVAL_QUERIES.high - 1
    evaluation_import(kb=kb, name="big", chunks=_jsonl(lines[-1], lines[0]))  # one new
    assert big.queries.count() == EVAL_QUERIES.high


def test_a_page_of_results_is_the_top_of_what_an_evaluation_scores(alice) -> None:
    """What the evaluation measures is what a user sees: for every claim, a hybrid page of
    10 holds exactly the first 10 hits of the evaluation's 300-deep ranking (the engines'
    pools and the fusion's statistics do not depend on how deep the caller asks)."""
    # A new knowledge base's chunk settings: ~5 chunks an abstract, more than a pool holds.
    kb = _built(
        make_kb(alice, "pages", chunk_size=None, chunk_overlap=None),
        [("corpus.jsonl", (MINI / "corpus.jsonl").read_bytes())],
    )
    generation = kb.active_generation
    assert generation is not None
    store = generation_reader(generation)
    assert store.vectors.count() > EVAL_POOL
    claims = [
        json.loads(line)["query"] for line in (MINI / "evalset.jsonl").read_text().splitlines()
    ]
    for claim in claims:
        params = SearchParams(
            query=claim, mode="hybrid", limit=EVAL_POOL, fusion=FusionParams(DEFAULT_FUSION)
        )
        evaluated, _exact = ranked_hits(generation, store, params, EVAL_POOL, {})
        page = knowledge_base_search(
            kb=kb, params=SearchParams(query=claim, mode="hybrid", limit=10)
        )
        assert [h.chunk_id for h in page.results] == [h.chunk_id for h in evaluated[:10]], claim
