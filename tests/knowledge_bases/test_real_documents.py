"""Real documents end to end (issue 23): Office files uploaded through the API are read
with their structure, searches cite the section, sheet and rows, and a document's chunks
and original file are there to see (API and page), for those allowed only."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.models import Document
from tests.factories import make_kb, make_user

pytestmark = pytest.mark.django_db

DOCS = Path(__file__).resolve().parents[1] / "data" / "documents"


@pytest.fixture
def office_kb(alice, client_for):  # type: ignore[no-untyped-def]
    make_kb(alice, "office")
    client = client_for(alice)
    names = ("manual.docx", "budget.xlsx", "deck.pptx", "bomb.docx")
    payload = {"files": [SimpleUploadedFile(n, (DOCS / n).read_bytes()) for n in names]}
    response = client.post("/api/kbs/office/documents", payload)
    assert response.status_code == 202, response.content
    body = response.json()
    # The bomb's zip directory looks like a Word file's: the request takes it, the worker
    # refuses it (its declared sizes) and that document fails alone.
    run_job_and_queue(IngestionJob.objects.latest("pk").pk)
    return client, body


def test_office_files_are_indexed_and_a_bomb_fails_alone(office_kb) -> None:  # type: ignore[no-untyped-def]
    documents = {d.original_filename: d for d in Document.objects.all()}
    assert {n: d.status for n, d in documents.items()} == {
        "manual.docx": "indexed",
        "budget.xlsx": "indexed",
        "deck.pptx": "indexed",
        "bomb.docx": "failed",
    }
    assert "zip bomb" in documents["bomb.docx"].error_message
    assert documents["budget.xlsx"].content_type.endswith("spreadsheetml.sheet")
    job = IngestionJob.objects.latest("pk")
    assert (job.documents_done, job.documents_failed) == (3, 1)


def test_search_cites_the_sheet_rows_and_section(office_kb) -> None:  # type: ignore[no-untyped-def]
    client, _ = office_kb
    response = client.post(
        "/api/kbs/office/search",
        {"query": "Counterweight cost 2022", "mode": "lexical", "limit": 3},
        content_type="application/json",
    )
    top = response.json()["results"][0]
    assert "Counterweight | 2022 | 95 EUR" in top["content"]
    assert "Part | Year | Cost" in top["content"]  # the header rides with the row
    assert top["citation"]["section"] == "Installation > Requirements"
    assert top["citation"]["rows"] == "2-3"
    widget = client.post(
        "/api/kbs/office/search",
        {"query": "Widget 37", "mode": "lexical", "limit": 1},
        content_type="application/json",
    ).json()["results"][0]
    assert widget["citation"]["sheet"] == "Costs" and "Item | 2020 | 2021" in widget["content"]
    assert "Widget 37 | 370 | 407" in widget["content"]  # sheet row 38
    first, _, last = widget["citation"]["rows"].partition("-")
    assert int(first) <= 38 <= int(last or first)
    slide = client.post(
        "/api/kbs/office/search",
        {"query": "Lisbon office", "mode": "lexical", "limit": 1},
        content_type="application/json",
    ).json()["results"][0]["citation"]
    assert (slide["slide"], slide["section"]) == (1, "Quarterly results > Notes")


def test_document_chunks_and_original_through_the_api_and_the_page(
    office_kb,  # type: ignore[no-untyped-def]
    alice,  # type: ignore[no-untyped-def]
    login,  # type: ignore[no-untyped-def]
    client_for,  # type: ignore[no-untyped-def]
) -> None:
    client, _ = office_kb
    manual = Document.objects.get(original_filename="manual.docx")
    chunks = client.get(f"/api/kbs/office/documents/{manual.pk}/chunks").json()
    assert [c["number"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert [c["section"] for c in chunks] == [
        "Installation",
        "Installation > Requirements",
        "Usage",
    ]
    original = client.get(f"/api/kbs/office/documents/{manual.pk}/content")
    assert original.status_code == 200
    assert original.content == (DOCS / "manual.docx").read_bytes()
    assert original["Content-Disposition"] == 'attachment; filename="manual.docx"'
    page = login(alice).get(f"/kbs/office/documents/{manual.pk}/").content.decode()
    assert 'id="chunk-2"' in page and "Installation &gt; Requirements" in page
    assert "Counterweight | 2022 | 95 EUR" in page
    assert (
        login(alice).get(f"/kbs/office/documents/{manual.pk}/file/").content
        == (DOCS / "manual.docx").read_bytes()
    )
    # Someone the KB is not shared with gets a 404 from each.
    mallory = make_user("mallory")
    other = client_for(mallory)
    assert other.get(f"/api/kbs/office/documents/{manual.pk}/chunks").status_code == 404
    assert other.get(f"/api/kbs/office/documents/{manual.pk}/content").status_code == 404
    assert login(mallory).get(f"/kbs/office/documents/{manual.pk}/file/").status_code == 404
    failed = Document.objects.get(original_filename="bomb.docx")
    page = login(alice).get(f"/kbs/office/documents/{failed.pk}/").content.decode()
    assert 'data-testid="no-chunks"' in page and "zip bomb" in page
