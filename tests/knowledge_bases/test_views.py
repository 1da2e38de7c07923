from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from ingestion.models import IngestionJob
from knowledge_bases.models import KnowledgeBase
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client():  # type: ignore[no-untyped-def]
    user = make_user("alice")
    client = Client()
    client.force_login(user)
    return user, client


def test_pages_require_login() -> None:
    for url in ("/", "/kbs/x/", "/jobs/1/"):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_create_a_kb_from_the_list_page(alice_client) -> None:
    _user, client = alice_client
    response = client.post("/", {"name": "Papers", "slug": "papers", "embedder": "local"})
    assert response.status_code == 302 and response["Location"] == "/kbs/papers/"
    page = client.get("/").content.decode()
    assert "Papers" in page and "none yet" in page


def test_the_create_form_shows_validation_errors(alice_client) -> None:
    _user, client = alice_client
    response = client.post("/", {"name": "X", "slug": "x", "embedder": "nonsense"})
    assert response.status_code == 422
    assert "unknown embedder" in response.content.decode()
    response = client.post(
        "/", {"name": "X", "slug": "x", "chunk_size": "100", "chunk_overlap": "90"}
    )
    assert "chunk overlap must be between 0 and half" in response.content.decode()
    assert not KnowledgeBase.objects.exists()


def test_upload_form_queues_a_job_and_reports_each_file(alice_client) -> None:
    user, client = alice_client
    kb = make_kb(user, "docs")
    response = client.post(
        "/kbs/docs/upload/",
        {
            "files": [
                SimpleUploadedFile("a.txt", text(5)),
                SimpleUploadedFile("x.png", b"\x89PNG\r\n\x1a\n"),
            ]
        },
        follow=True,
    )
    job = IngestionJob.objects.get(knowledge_base=kb)
    assert response.redirect_chain[-1][0] == f"/jobs/{job.pk}/"
    page = response.content.decode()
    assert (
        "Accepted a.txt." in page and "x.png: rejected (unsupported file type: PNG image)." in page
    )
    assert 'hx-trigger="every 1s"' in page  # a queued job polls


def test_the_progress_partial_is_returned_to_htmx_and_stops_polling_when_done(alice_client) -> None:
    user, client = alice_client
    kb = make_kb(user, "docs")
    job = upload(kb, [("a.txt", b"words")]).job
    partial = client.get(f"/jobs/{job.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<section id="job-progress"') and "<html" not in partial
    full = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "<html" in full and 'id="job-progress"' in full
    IngestionJob.objects.filter(pk=job.pk).update(
        status="succeeded", total=10, embedded=10, persisted=10
    )
    done = client.get(f"/jobs/{job.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in done and 'data-testid="persisted">10<' in done


def test_another_users_kb_and_job_are_404(alice_client) -> None:
    _user, client = alice_client
    bob = make_user("bob")
    kb = make_kb(bob, "bobs")
    job = upload(kb, [("a.txt", b"words")]).job
    assert client.get("/kbs/bobs/").status_code == 404
    assert (
        client.post("/kbs/bobs/upload/", {"files": [SimpleUploadedFile("a.txt", b"x")]}).status_code
        == 404
    )
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 404


def test_cancel_button_cancels_a_queued_job(alice_client) -> None:
    user, client = alice_client
    job = upload(make_kb(user, "docs"), [("a.txt", b"words")]).job
    client.post(f"/jobs/{job.pk}/cancel/")
    assert IngestionJob.objects.get(pk=job.pk).status == "cancelled"
