"""The document page: versions with who, when and what changed, which one serves,
restoring an old version and uploading a new one; the Documents tab's version column and
the upload form's "add as new documents"."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.models import Document, KnowledgeBase
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def versioned(alice) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "docs")
    run_job_and_queue(upload(kb, [("notes.txt", text(12, "enzymes"))], user=alice).job.pk)
    run_job_and_queue(upload(kb, [("notes.txt", text(13, "enzymes"))], user=alice).job.pk)
    return kb


def test_it_lists_versions_and_which_one_serves(alice, versioned, login) -> None:
    document = Document.objects.get()
    page = login(alice).get(f"/kbs/docs/documents/{document.pk}/").content.decode()
    assert (
        'data-testid="latest-version">v2<' in page and 'data-testid="serving-version">v2<' in page
    )
    assert 'data-testid="version-2"' in page and 'data-testid="version-1"' in page
    assert page.count(">alice<") == 2 and 'data-testid="restore-1"' in page
    assert 'data-testid="restore-2"' not in page  # the latest content is not restorable
    tab = login(alice).get("/kbs/docs/").content.decode()
    assert 'v2 <small class="muted">of 2,' in tab and f"/documents/{document.pk}/" in tab


def test_it_restores_and_uploads_versions(alice, versioned, login) -> None:
    client = login(alice)
    document = Document.objects.get()
    response = client.post(f"/kbs/docs/documents/{document.pk}/versions/1/restore/")
    assert response.status_code == 302
    document.refresh_from_db()
    assert (document.version, document.serving_version, document.status) == (3, 2, "pending")
    run_job_and_queue(IngestionJob.objects.latest("pk").pk)
    new = SimpleUploadedFile("renamed.txt", text(14, "enzymes"), content_type="text/plain")
    response = client.post(f"/kbs/docs/documents/{document.pk}/replace/", {"file": new})
    assert response.status_code == 302
    document.refresh_from_db()
    assert document.version == 4 and document.original_filename == "renamed.txt"
    page = client.get(f"/kbs/docs/documents/{document.pk}/").content.decode()
    assert "restored from v1" in page and "v3 answers searches until v4" in page


def test_readers_see_versions_but_cannot_change_them(versioned, login) -> None:
    reader = make_user("rae")
    versioned.shared_with.add(reader)
    document = Document.objects.get()
    client = login(reader)
    page = client.get(f"/kbs/docs/documents/{document.pk}/").content.decode()
    assert 'data-testid="versions-table"' in page and "restore-1" not in page
    response = client.post(f"/kbs/docs/documents/{document.pk}/versions/1/restore/")
    assert response.status_code in (403, 404) and Document.objects.get().version == 2
    outsider = login(make_user("otto"))
    assert outsider.get(f"/kbs/docs/documents/{document.pk}/").status_code == 404


def test_the_upload_form_can_add_a_file_as_a_new_document(alice, versioned, login) -> None:
    client = login(alice)
    same_name = SimpleUploadedFile("notes.txt", text(20, "glaciers"), content_type="text/plain")
    client.post(
        "/kbs/docs/upload/", {"files": same_name, "as_new": "on"}, headers={"HX-Request": "true"}
    )
    assert Document.objects.filter(original_filename="notes.txt").count() == 2
    again = SimpleUploadedFile("notes.txt", text(20, "glaciers"), content_type="text/plain")
    page = client.post("/kbs/docs/upload/", {"files": again}, headers={"HX-Request": "true"})
    assert 'data-testid="unchanged"' in page.content.decode()
