"""Evaluation sets and the quality gate on every surface: the API, the CLI, the pages
(quality page, playground marks, the gate's report, the override, the plan) and the admin."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from ingestion.jobs import run_job_and_queue
from knowledge_bases.generations import generation_quality_record
from knowledge_bases.models import Generation, KnowledgeBase, RebuildPlanRun
from knowledge_bases.services import (
    rebuild_plan_execute,
    rebuild_plan_request,
    rebuild_plans_prune,
)
from ragstudio.core.errors import TooManyRequests, ValidationError
from ragstudio.testing.generations import make_generation
from search.evaluation import evaluation_run_execute
from search.models import EvaluationRun, EvaluationSet, Judgement
from tests.factories import make_kb, make_user, upload

pytestmark = pytest.mark.django_db
HX = {"HX-Request": "true"}
S = Generation.Status

DOCS = [
    ("enzymes.txt", b"Enzymes are proteins that speed up chemical reactions in cells."),
    ("volcanoes.txt", b"Volcanic eruptions release magma, ash and gases from the crust."),
    ("tides.txt", b"Ocean tides rise and fall with the gravitational pull of the moon."),
]


@pytest.fixture
def kb(alice) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "science")
    job = upload(kb, DOCS).job
    run_job_and_queue(job.pk)
    kb.refresh_from_db()
    return kb


def _ids(kb: KnowledgeBase) -> dict[str, int]:
    return dict(kb.documents.values_list("original_filename", "pk"))


def test_evaluation_sets_through_the_api(kb, alice, client_for) -> None:
    client = client_for(alice)
    ids = _ids(kb)
    created = client.post(
        "/api/kbs/science/evalsets",
        {
            "name": "basics",
            "queries": [
                {"query": "what speeds up reactions", "relevant": ["enzymes.txt"]},
                {"query": "magma and ash", "relevant": [ids["volcanoes.txt"]], "grades": {}},
            ],
        },
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["name"], body["queries"], body["judged"]) == ("basics", 2, 2)
    assert {i["query"] for i in body["items"]} == {"what speeds up reactions", "magma and ash"}
    assert (
        client.post(
            "/api/kbs/science/evalsets", {"name": "basics"}, content_type="application/json"
        ).status_code
        == 409
    )
    assert (
        client.post(
            "/api/kbs/science/evalsets", {"name": "-bad name"}, content_type="application/json"
        ).status_code
        == 422
    )
    unknown = client.post(
        "/api/kbs/science/evalsets/basics/queries",
        {"queries": [{"query": "x", "relevant": ["nope.pdf"]}]},
        content_type="application/json",
    )
    assert (
        unknown.status_code == 422 and "no document named 'nope.pdf'" in unknown.json()["message"]
    )
    upload_file = SimpleUploadedFile(
        "set.jsonl", json.dumps({"query": "moon pull", "relevant": ["tides.txt"]}).encode()
    )
    imported = client.post("/api/kbs/science/evalsets/basics/import", {"file": upload_file})
    assert imported.status_code == 200 and imported.json()["queries_added"] == 1
    marked = client.post(
        "/api/kbs/science/evalsets/basics/judgements",
        {"query": "moon pull", "document_id": ids["volcanoes.txt"], "grade": 0},
        content_type="application/json",
    )
    assert marked.status_code == 200
    run = client.post("/api/kbs/science/evalsets/basics/runs", {}, content_type="application/json")
    # Queued for a worker: nothing is measured inside the request.
    assert run.status_code == 202, run.content
    queued = run.json()
    assert (queued["status"], queued["done"], queued["queries"]) == ("queued", 0, 3)
    assert queued["metrics"] == {} and queued["finished_at"] is None
    again = client.post(
        "/api/kbs/science/evalsets/basics/runs", {}, content_type="application/json"
    )
    assert again.status_code == 409 and f"run {queued['id']}" in again.json()["message"]
    assert evaluation_run_execute(queued["id"]) == "succeeded"
    assert evaluation_run_execute(queued["id"]) == "taken"  # a second delivery does nothing
    result = client.get(f"/api/kbs/science/evalsets/basics/runs/{queued['id']}").json()
    assert result["status"] == "succeeded" and result["done"] == 3 and result["error"] == ""
    assert result["generation"] == 1 and result["queries"] == 3 and result["stale"] is False
    # Three distinct topics, each query's document is found first by every mode.
    for mode in ("vector", "lexical", "hybrid"):
        assert result["metrics"][mode]["recall@10"] == 1.0, (mode, result["metrics"])
    assert len(result["per_query"]) == 3
    listed = client.get("/api/kbs/science/evalsets").json()
    assert [(s["name"], s["queries"], s["judged"]) for s in listed] == [("basics", 3, 3)]
    runs = client.get("/api/kbs/science/evalsets/basics/runs").json()
    assert [r["generation"] for r in runs] == [1]
    compared = client.get("/api/kbs/science/evalsets/basics/compare?a=1&b=1").json()
    assert compared["better"] == [] and compared["worse"] == [] and compared["unchanged"] == 3
    assert client.get("/api/kbs/science/evalsets/basics/compare?a=1&b=9").status_code == 404
    assert client.get("/api/kbs/science/evalsets/nope").status_code == 404
    assert client.delete("/api/kbs/science/evalsets/basics").status_code == 204
    assert not EvaluationSet.objects.exists()


def test_readers_see_sets_and_only_people_who_may_change_the_kb_change_them(
    kb, alice, client_for
) -> None:
    reader = make_user("rita")
    kb.shared_with.add(reader)
    client = client_for(reader)
    assert client.get("/api/kbs/science/evalsets").status_code == 200
    refused = client.post(
        "/api/kbs/science/evalsets", {"name": "mine"}, content_type="application/json"
    )
    assert refused.status_code == 403
    stranger = client_for(make_user("sam"))
    assert stranger.get("/api/kbs/science/evalsets").status_code == 404


def test_the_quality_gate_is_a_setting_of_the_knowledge_base(kb, alice, client_for) -> None:
    client = client_for(alice)
    assert client.get("/api/kbs/science").json()["quality_gate"] == {"hybrid:ndcg@10": 0.01}
    changed = client.patch(
        "/api/kbs/science",
        {"quality_gate": {"hybrid:ndcg@10": 0.02, "vector:recall@10": 0}},
        content_type="application/json",
    )
    assert changed.status_code == 200
    assert changed.json()["quality_gate"] == {"hybrid:ndcg@10": 0.02, "vector:recall@10": 0.0}
    for bad in ({"hybrid:ndcg@11": 0.1}, {"hybrid:mrr": 2}, {"hybrid:mrr": True}):
        response = client.patch(
            "/api/kbs/science", {"quality_gate": bad}, content_type="application/json"
        )
        assert response.status_code == 422, bad
    kb.refresh_from_db()
    assert kb.quality_gate == {"hybrid:ndcg@10": 0.02, "vector:recall@10": 0.0}
    created = client.post(
        "/api/kbs",
        {"slug": "gateless", "name": "Gateless", "quality_gate": {}},
        content_type="application/json",
    )
    assert created.status_code == 201 and created.json()["quality_gate"] == {}


def test_the_evalsets_command_imports_runs_and_compares(kb, tmp_path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"query": "chemical reactions in cells", "relevant": ["enzymes.txt"]},
                {"query": "gravitational pull of the moon", "relevant": ["tides.txt"]},
            ]
        )
    )
    out = io.StringIO()
    call_command("evalsets", "--kb", "science", "import", "cli", str(path), stdout=out)
    assert "cli: 2 queries added, 0 updated, 2 judgements" in out.getvalue()
    out = io.StringIO()
    call_command("evalsets", "--kb", "science", "run", "cli", "--json", stdout=out)
    body = json.loads(out.getvalue())
    assert body["generation"] == 1 and body["queries"] == 2
    for mode in ("vector", "lexical", "hybrid"):
        assert set(body[mode]) == {"ndcg@10", "recall@10", "recall@100", "mrr"}
        assert body[mode]["mrr"] == 1.0
    out = io.StringIO()
    call_command("evalsets", "--kb", "science", "run", "cli", "--generation", "1", stdout=out)
    assert "hybrid" in out.getvalue() and "nDCG@10" in out.getvalue()
    out = io.StringIO()
    call_command("evalsets", "--kb", "science", "compare", "cli", "1", "1", stdout=out)
    assert "0 better, 0 worse, 2 unchanged" in out.getvalue()
    out = io.StringIO()
    call_command("evalsets", "--kb", "science", "list", stdout=out)
    assert "cli" in out.getvalue() and "2 queries" in out.getvalue()
    with pytest.raises(CommandError, match="no such file"):
        call_command("evalsets", "--kb", "science", "import", "cli", str(tmp_path / "none"))
    with pytest.raises(CommandError, match="no evaluation set 'nope'"):
        call_command("evalsets", "--kb", "science", "run", "nope")
    with pytest.raises(CommandError, match="has no generation 7"):
        call_command("evalsets", "--kb", "science", "run", "cli", "--generation", "7")


def test_the_quality_page_imports_evaluates_and_compares(kb, alice, login) -> None:
    client = login(alice)
    page = client.get("/kbs/science/quality/").content.decode()
    assert (
        "No evaluation set yet" in page and "hybrid nDCG@10</strong> falls by at most 0.010" in page
    )
    body = json.dumps({"query": "magma", "relevant": ["volcanoes.txt"]}).encode()
    imported = client.post(
        "/kbs/science/quality/import/",
        {"name": "pages", "file": SimpleUploadedFile("s.jsonl", body)},
        follow=True,
    )
    assert "Imported into pages: 1 queries added" in imported.content.decode()
    bad = client.post(
        "/kbs/science/quality/import/",
        {"name": "pages", "file": SimpleUploadedFile("s.jsonl", b"{oops")},
        follow=True,
    )
    assert "line 1: not valid JSON" in bad.content.decode()
    ran = client.post("/kbs/science/quality/pages/run/", {"generation": "1"}, follow=True)
    html = ran.content.decode()
    assert "Evaluating generation #1 on pages (1 queries)" in html
    # The table follows the queued run (polling while it is live), then shows its numbers.
    assert 'hx-trigger="every 2s"' in html and "0 of 1 queries" in html
    run = EvaluationRun.objects.get()
    assert run.status == "queued"
    assert evaluation_run_execute(run.pk) == "succeeded"
    part = client.get("/kbs/science/quality/?part=sets", headers=HX).content.decode()
    assert part.startswith('<section aria-labelledby="sets-h" id="evalsets">')  # polling stops
    assert 'data-testid="ndcg-hybrid-1">1.0000<' in part
    # A failed attempt after it is shown beside the finished numbers, with its reason.
    EvaluationRun.objects.create(
        evaluation_set=run.evaluation_set,
        generation=run.generation,
        status="failed",
        set_version=1,
        fusion="rrf",
        queries=1,
        error_message="the worker stopped before it finished: run it again",
    )
    part = client.get("/kbs/science/quality/?part=sets", headers=HX).content.decode()
    assert 'data-testid="ndcg-hybrid-1">1.0000<' in part
    assert "the worker stopped before it finished" in part
    compared = client.get("/kbs/science/quality/?set=pages&a=1&b=1").content.decode()
    assert 'data-testid="comparison"' in compared and "0 worse" in compared
    missing = client.get("/kbs/science/quality/?set=pages&a=1&b=5")
    assert missing.status_code == 404
    reader = make_user("rita")
    kb.shared_with.add(reader)
    read_only = login(reader)
    assert "Evaluate" not in read_only.get("/kbs/science/quality/").content.decode()
    assert read_only.post("/kbs/science/quality/pages/run/", {"generation": "1"}).status_code == 403


def test_playground_marks_record_judgements_and_show_them(kb, alice, login) -> None:
    client = login(alice)
    page = client.get("/kbs/science/search/?q=magma+eruptions&set=marks", headers=HX)
    html = page.content.decode()
    assert page.status_code == 200 and html.count('data-testid="judge"') >= 1
    assert "not judged" in html
    volcano = _ids(kb)["volcanoes.txt"]
    marked = client.post(
        "/kbs/science/search/judge/",
        {
            "set": "marks",
            "q": "magma eruptions",
            "document_id": volcano,
            "grade": 1,
            "chunk_id": "c1",
            "record_id": "",
        },
        headers=HX,
    )
    assert marked.status_code == 200
    assert "relevant in marks" in marked.content.decode()
    assert 'aria-pressed="true"' in marked.content.decode()
    judgement = Judgement.objects.get()
    assert (judgement.query.text, judgement.document_id, judgement.grade) == (
        "magma eruptions",
        volcano,
        1,
    )
    again = client.get("/kbs/science/search/?q=magma+eruptions&set=marks", headers=HX)
    assert "relevant in marks" in again.content.decode()
    invalid = client.post(
        "/kbs/science/search/judge/",
        {"set": "marks", "q": "x", "document_id": 999999, "grade": 1},
        headers=HX,
    )
    assert invalid.status_code == 404
    bad_grade = client.post(
        "/kbs/science/search/judge/",
        {"set": "marks", "q": "x", "document_id": volcano, "grade": 11},
        headers=HX,
    )
    assert bad_grade.status_code == 422
    # Without a set named, the playground shows no buttons.
    plain = client.get("/kbs/science/search/?q=magma", headers=HX).content.decode()
    assert 'data-testid="judge"' not in plain


def _regression(kb: KnowledgeBase) -> Generation:
    worse = make_generation(kb, S.READY)
    generation_quality_record(
        generation=worse,
        passed=False,
        report={
            "gate": {"hybrid:ndcg@10": 0.01},
            "active_generation": kb.active_generation.number if kb.active_generation else 1,
            "sets": [
                {
                    "name": "claims",
                    "queries": 24,
                    "active": {"hybrid": {"ndcg@10": 0.75}},
                    "new": {"hybrid": {"ndcg@10": 0.70}},
                    "failures": [
                        {
                            "metric": "hybrid:ndcg@10",
                            "text": "hybrid nDCG@10 0.750 -> 0.700 (-0.050, at most -0.010)",
                        }
                    ],
                }
            ],
        },
    )
    return worse


def test_the_generations_page_shows_the_regression_and_takes_an_override(kb, alice, login) -> None:
    worse = _regression(kb)
    client = login(alice)
    html = client.get("/kbs/science/generations/").content.decode()
    assert "quality regression" in html and "0.750 -&gt; 0.700 (-0.050, at most -0.010)" in html
    assert f'data-testid="override-form-{worse.number}"' in html
    refused = client.post(
        "/kbs/science/generations/promote/", {"number": worse.number}, headers=HX
    ).content.decode()
    assert "quality regression against the active generation" in refused
    done = client.post(
        "/kbs/science/generations/promote/",
        {"number": worse.number, "override_quality": "checked by hand"},
        headers=HX,
    ).content.decode()
    assert f"Generation #{worse.number} is active." in done
    event = worse.events.get(to_status=S.ACTIVE)
    assert event.actor == alice and event.note.endswith("override by alice: checked by hand")


def test_the_plan_button_shows_the_plan_without_starting_anything(kb, alice, login) -> None:
    client = login(alice)
    html = client.post(
        "/kbs/science/generations/rebuild/",
        {"chunk_size": "32", "chunk_overlap": "4", "plan": "1"},
        headers=HX,
    ).content.decode()
    # The plan is a worker's: the page shows it pending, polling its own box.
    plan_run = RebuildPlanRun.objects.get()
    box = f'hx-get="/kbs/science/generations/plans/{plan_run.pk}/" hx-trigger="every 1s"'
    assert 'data-testid="rebuild-plan-pending"' in html and box in html
    assert 'value="32"' in html  # the form keeps the settings planned
    assert rebuild_plan_execute(plan_run.pk) == "succeeded"
    part = client.get(f"/kbs/science/generations/plans/{plan_run.pk}/", headers=HX)
    html = part.content.decode()
    assert 'data-testid="rebuild-plan"' in html and "chunk_size: <code>64</code>" in html
    assert "hx-trigger" not in html  # done: the box stops polling
    assert kb.generations.count() == 1  # nothing started
    page = client.get(f"/kbs/science/generations/?plan={plan_run.pk}").content.decode()
    assert 'data-testid="plan-chunks"' in page
    # Someone who may only read the knowledge base sees no plan.
    reader = make_user("rita")
    kb.shared_with.add(reader)
    assert login(reader).get(f"/kbs/science/generations/plans/{plan_run.pk}/").status_code == 403


def test_the_admin_asks_for_a_reason_to_promote_a_regression(kb) -> None:
    staff = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    worse = _regression(kb)
    url = "/admin/knowledge_bases/generation/"
    ask = client.post(url, {"action": "promote", "_selected_action": [worse.pk]})
    page = ask.content.decode()
    assert "It failed the quality gate" in page and 'name="reason"' in page
    again = client.post(
        url, {"action": "promote", "_selected_action": [worse.pk], "confirmed": "yes"}
    )
    assert "Give a reason to promote it anyway." in again.content.decode()
    kb.refresh_from_db()
    assert kb.active_generation_id != worse.pk
    done = client.post(
        url,
        {
            "action": "promote",
            "_selected_action": [worse.pk],
            "confirmed": "yes",
            "reason": "signed off",
        },
    )
    assert done.status_code == 302
    kb.refresh_from_db()
    assert kb.active_generation_id == worse.pk
    assert worse.events.get(to_status=S.ACTIVE).note.endswith("override by root: signed off")


def test_plans_are_bounded_per_user_and_old_or_abandoned_ones_are_pruned(kb, alice) -> None:
    first = rebuild_plan_request(kb=kb, user=alice, chunk_size=32, enqueue=False)
    second = rebuild_plan_request(kb=kb, user=alice, chunk_size=48, enqueue=False)
    assert rebuild_plan_request(kb=kb, user=alice, chunk_size=32, enqueue=False) == first
    with pytest.raises(TooManyRequests, match="2 rebuild plans being computed"):
        rebuild_plan_request(kb=kb, user=alice, chunk_size=40, enqueue=False)
    with pytest.raises(ValidationError, match="chunk overlap"):
        rebuild_plan_request(kb=kb, user=alice, chunk_size=32, chunk_overlap=40)
    now = timezone.now()
    RebuildPlanRun.objects.filter(pk=first.pk).update(
        status="running", started_at=now - timedelta(days=1)
    )
    done = RebuildPlanRun.objects.create(
        knowledge_base=kb, status="succeeded", finished_at=now - timedelta(hours=25)
    )
    rebuild_plans_prune(now)
    first.refresh_from_db()
    assert first.status == "failed" and "the worker stopped" in first.error_message
    assert RebuildPlanRun.objects.filter(pk=second.pk, status="queued").exists()
    assert not RebuildPlanRun.objects.filter(pk=done.pk).exists()
