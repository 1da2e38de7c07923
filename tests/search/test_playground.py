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
