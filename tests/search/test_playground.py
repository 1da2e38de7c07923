from __future__ import annotations

import pytest
from django.test import Client

from ingestion.jobs import run_job_and_queue
from knowledge_bases.models import Generation
from ragstudio.testing.generations import make_generation
from tests.factories import make_kb, make_user, upload

pytestmark = pytest.mark.django_db
HX = {"HX-Request": "true"}


@pytest.fixture
def client_kb():  # type: ignore[no-untyped-def]
    user = make_user("alice")
    kb = make_kb(user, "docs")
    body = b"The zebrafish circadian clock is reset by blue light. Tides follow the moon."
    run_job_and_queue(upload(kb, [("fish.txt", body)]).job.pk)
    kb.refresh_from_db()
    client = Client()
    client.force_login(user)
    return client, kb


def test_page_and_results_fragment(client_kb) -> None:
    client, _kb = client_kb
    full = client.get("/kbs/docs/search/").content.decode()
    assert "<html" in full and 'role="search"' in full and 'data-testid="result"' not in full
    html = client.get(
        "/kbs/docs/search/?q=zebrafish+clock&mode=lexical", headers=HX
    ).content.decode()
    assert "<html" not in html and "<mark>zebrafish</mark>" in html
    assert "fish.txt · chunk 1 of 1" in html and "BM25 #1" in html
    page = client.get("/kbs/docs/search/?q=zebrafish+clock").content.decode()
    assert "<html" in page and "<mark>zebrafish</mark>" in page  # a shared link works too


def test_validation_errors_and_no_active_generation(client_kb) -> None:
    client, kb = client_kb
    empty = client.get("/kbs/docs/search/?q=", headers=HX)
    assert empty.status_code == 422 and "This field is required" in empty.content.decode()
    bad = client.get("/kbs/docs/search/?q=x&mode=fuzzy", headers=HX)
    assert bad.status_code == 422 and "mode" in bad.content.decode()
    bad = client.get("/kbs/docs/search/?q=x&generation=99", headers=HX)
    assert bad.status_code == 422 and "generation" in bad.content.decode()
    make_kb(kb.owner, "fresh")
    none = client.get("/kbs/fresh/search/?q=x", headers=HX)
    assert none.status_code == 409 and "no active generation" in none.content.decode()


def test_side_by_side_shows_the_overlap_of_the_top_ten(client_kb) -> None:
    client, kb = client_kb
    other = make_generation(kb, Generation.Status.READY, rows=6)
    html = client.get(
        f"/kbs/docs/search/?q=protein+zebrafish&mode=lexical&compare={other.number}", headers=HX
    ).content.decode()
    assert f'data-testid="results-{other.number}"' in html and 'data-testid="results-1"' in html
    assert f"between generation #1 and #{other.number}" in html
    assert "<strong>0</strong> chunks" in html
    same = client.get(
        "/kbs/docs/search/?q=zebrafish&mode=lexical&compare=1", headers=HX
    ).content.decode()
    assert "<strong>1</strong> chunks" in same and 'class="result shared"' in same


@pytest.fixture
def steerable():  # type: ignore[no-untyped-def]
    import json
    from datetime import timedelta

    from django.utils import timezone

    user = make_user("alice")
    kb = make_kb(user, "lib", chunk_size=64, chunk_overlap=0)
    records = "\n".join(
        json.dumps(
            {
                "id": f"r{y}",
                "title": f"Report {y}",
                "text": f"Tidal energy report {y}.",
                "metadata": {"year": y},
            }
        )
        for y in (2019, 2020, 2021)
    ).encode()
    files = [
        ("tide-tables.txt", b"Tides follow the moon. Tidal ranges peak at spring tides."),
        ("moon-notes.txt", b"The moon pulls the sea: tides rise and fall twice a day."),
        ("reports.jsonl", records),
    ]
    run_job_and_queue(upload(kb, files).job.pk)
    kb.refresh_from_db()
    old = kb.documents.get(original_filename="moon-notes.txt")
    old.created_at = timezone.now() - timedelta(days=30)
    old.save(update_fields=["created_at"])
    client = Client()
    client.force_login(user)
    return client, kb


def _documents(html: str) -> list[str]:
    import re

    return re.findall(r'data-testid="result-document">([^<]*)<', html)


def test_the_search_page_filters_by_document_name_metadata_and_date(steerable) -> None:
    client, kb = steerable
    base = "/kbs/lib/search/?q=tides+moon+tidal&mode=lexical"
    everything = set(_documents(client.get(base, headers=HX).content.decode()))
    assert {"tide tables", "moon notes", "reports"} <= everything
    by_name = client.get(base + "&doc=TABLES", headers=HX).content.decode()
    assert set(_documents(by_name)) == {"tide tables"}
    by_meta = client.get(base + "&meta=year%3D2020", headers=HX).content.decode()
    assert set(_documents(by_meta)) == {"reports"} and "Report 2020" in by_meta
    assert "Report 2019" not in by_meta
    today = kb.documents.get(original_filename="tide-tables.txt").created_at.date().isoformat()
    recent = client.get(base + f"&after={today}", headers=HX).content.decode()
    assert "moon notes" not in _documents(recent) and "tide tables" in _documents(recent)
    older = client.get(base + f"&before={today}", headers=HX).content.decode()
    assert set(_documents(older)) == {"moon notes"}
    nothing = client.get(base + "&doc=no-such-document", headers=HX)
    assert nothing.status_code == 200 and "No results." in nothing.content.decode()
    bad = client.get(base + "&meta=year", headers=HX)
    assert bad.status_code == 422 and "is not key=value" in bad.content.decode()


def test_the_search_page_pages_and_cuts_at_a_minimum_score(steerable) -> None:
    client, _kb = steerable
    base = "/kbs/lib/search/?q=tides+moon+tidal&mode=lexical"
    all_ids = _documents(client.get(base + "&limit=20", headers=HX).content.decode())
    assert len(all_ids) >= 3
    first = client.get(base + "&limit=1", headers=HX).content.decode()
    assert 'data-testid="next-page"' in first and 'rel="prev"' not in first
    second = client.get(base + "&limit=1&page=2", headers=HX).content.decode()
    assert _documents(first) + _documents(second) == all_ids[:2]
    assert 'rel="prev"' in second and "Results from 2 for" in second
    assert "What a score means" in client.get(base).content.decode()
    cut = client.get(base + "&limit=20&min_score=1000", headers=HX).content.decode()
    assert _documents(cut) == [] and "No results." in cut


def test_the_page_and_the_api_answer_a_filtered_search_alike(steerable, client_for) -> None:
    client, kb = steerable
    page = client.get(
        "/kbs/lib/search/?q=tidal+report&mode=hybrid&meta=year%3D2021&doc=report&limit=5",
        headers=HX,
    ).content.decode()
    api = (
        client_for(kb.owner)
        .post(
            "/api/kbs/lib/search",
            {
                "query": "tidal report",
                "limit": 5,
                "filters": {"metadata": {"year": 2021}, "document_name": "report"},
            },
            content_type="application/json",
        )
        .json()["results"]
    )
    assert [r["citation"]["title"] for r in api] == ["Report 2021"]
    assert api[0]["citation"]["document_title"] == "reports"
    assert "Report 2021" in page and _documents(page) == ["reports"]
