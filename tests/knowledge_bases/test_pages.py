"""The HTMX pages: each fragment for htmx requests and the whole page otherwise, forms'
validation errors, and who may see or change what."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_store
from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.testing.generations import make_generation
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db
HX = {"HX-Request": "true"}
S = Generation.Status


@pytest.fixture
def indexed(alice) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "docs")
    job = upload(kb, [("a.txt", text(12, "enzymes")), ("b.txt", text(12, "volcanoes"))]).job
    run_job_and_queue(job.pk)
    kb.refresh_from_db()
    return kb


def is_fragment(html: str, start: str) -> bool:
    return html.lstrip().startswith(start) and "<html" not in html


def test_kb_list_shows_counts_generation_and_last_job(alice, indexed, login) -> None:
    page = login(alice).get("/").content.decode()
    assert ">2 <small>(2 indexed)</small>" in page
    assert f"<td>{indexed.active_generation.chunk_count}</td>" in page
    assert "<td>#1</td>" in page and 'class="status succeeded">succeeded' in page


def test_create_form_errors_are_shown_by_field(alice, login) -> None:
    client = login(alice)
    response = client.post("/", {"name": "", "slug": "Bad Slug!"})
    page = response.content.decode()
    assert response.status_code == 422
    assert 'data-testid="error-name"' in page and 'data-testid="error-slug"' in page
    # The message says what the hint says (Django's slug rule allowed "Bad_Slug").
    assert "lowercase letters, digits or hyphens" in page
    underscore = client.post("/", {"name": "T", "slug": "bad_slug"}).content.decode()
    assert "must be 1-64 lowercase letters, digits or hyphens" in underscore
    make_kb(alice, "taken")
    page = client.post("/", {"name": "T", "slug": "taken"}).content.decode()
    assert "already" in page and KnowledgeBase.objects.count() == 1


def test_an_empty_slug_is_made_from_the_name(alice, login) -> None:
    client = login(alice)
    response = client.post("/", {"name": "Café Notes 2026!", "slug": ""})
    assert response.status_code == 302, response.content
    assert KnowledgeBase.objects.get(owner=alice).slug == "cafe-notes-2026"
    page = client.get("/").content.decode()
    assert 'data-slug-from="id_name"' in page and "empty: made from the name" in page


def test_kb_page_and_its_live_fragment(alice, indexed, login) -> None:
    client = login(alice)
    full = client.get("/kbs/docs/").content.decode()
    assert "<html" in full and 'id="upload-form"' in full and 'id="kb-live"' in full
    fragment = client.get("/kbs/docs/", headers=HX).content.decode()
    assert is_fragment(fragment, '<div id="kb-live"') and "a.txt" in fragment
    assert "every 2s" not in fragment  # no job running: no polling
    upload(indexed, [("c.txt", text(5, "comets"))])  # a queued job
    assert "every 2s" in client.get("/kbs/docs/", headers=HX).content.decode()


def test_upload_fragment_reports_each_file(alice, indexed, login) -> None:
    client = login(alice)
    big = SimpleUploadedFile("big.txt", text(200, "everything"))
    files = [
        SimpleUploadedFile("new.txt", text(6, "glaciers")),
        SimpleUploadedFile("again.txt", text(12, "enzymes")),  # same bytes as a.txt
        SimpleUploadedFile("pic.gif", b"GIF89a" + b"\x00" * 20),
        big,
        SimpleUploadedFile("empty.txt", b""),  # refused on its own, not with the batch
    ]
    from django.conf import settings

    limit = settings.RAGSTUDIO_MAX_UPLOAD_BYTES
    settings.RAGSTUDIO_MAX_UPLOAD_BYTES = 2000
    try:
        response = client.post("/kbs/docs/upload/", {"files": files}, headers=HX)
    finally:
        settings.RAGSTUDIO_MAX_UPLOAD_BYTES = limit
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert html.count('data-testid="accepted"') == 1 and "new.txt</strong> accepted" in html
    assert 'data-testid="duplicate"' in html and "again.txt</strong>: duplicate of a.txt" in html
    assert "pic.gif</strong>: unsupported file type: GIF image" in html
    assert "big.txt</strong>:" in html and "limit" in html
    assert "empty.txt</strong>: empty file" in html
    assert 'id="kb-live" hx-swap-oob="true"' in html  # the tables refresh too
    none = client.post("/kbs/docs/upload/", {}, headers=HX)
    assert none.status_code == 422 and "no files were uploaded" in none.content.decode()


def test_delete_a_document_removes_its_chunks_unless_a_job_runs(alice, indexed, login) -> None:
    client = login(alice)
    doc = indexed.documents.get(original_filename="a.txt")
    store = generation_store(indexed.active_generation)
    before = store.vectors.count()
    upload(indexed, [("c.txt", text(5, "comets"))])  # queued: deleting must wait
    busy = client.post(f"/kbs/docs/documents/{doc.pk}/delete/", headers=HX).content.decode()
    assert (
        "delete documents when it has finished" in busy
        and Document.objects.filter(pk=doc.pk).exists()
    )
    IngestionJob.objects.filter(status="queued").update(status="cancelled")
    html = client.post(f"/kbs/docs/documents/{doc.pk}/delete/", headers=HX).content.decode()
    assert is_fragment(html, '<div id="kb-live"') and "Deleted a.txt." in html
    assert not Document.objects.filter(pk=doc.pk).exists()
    assert store.vectors.count() == before - doc.chunk_count
    assert str(doc.pk) not in {
        str(r["document_id"]) for r in store.vectors.rows(columns=["document_id"])
    }


def test_generations_page_fragment_and_disabled_reasons(alice, login) -> None:
    kb = make_kb(alice, "gens")
    make_generation(kb, S.ARCHIVED)
    make_generation(kb, S.ACTIVE)
    make_generation(kb, S.BUILDING)
    make_generation(kb, S.READY, checked=False)
    client = login(alice)
    full = client.get("/kbs/gens/generations/").content.decode()
    assert "<html" in full and 'id="generations"' in full
    html = client.get("/kbs/gens/generations/", headers=HX).content.decode()
    assert is_fragment(html, '<div id="generations"')
    assert 'title="Cannot promote: it is already active"' in html
    assert 'title="Cannot promote: it is still building"' in html
    assert 'title="Cannot promote: it has not been checked yet"' in html
    assert 'data-testid="promote-1">' in html  # archived: enabled
    assert "Roll back to #1" in html
    assert "every 2s" in html  # a building generation: the table polls


def test_generation_actions_report_success_and_refusals(alice, login) -> None:
    kb = make_kb(alice, "gens")
    make_generation(kb, S.ARCHIVED)
    make_generation(kb, S.ACTIVE)
    client = login(alice)
    html = client.post("/kbs/gens/generations/rollback/", headers=HX).content.decode()
    assert "Rolled back: generation #1 is active." in html
    # The header above the table says so too (it is sent out of band with the fragment).
    status = html[html.index('<p id="kb-status"') :]
    assert 'hx-swap-oob="true"' in status.split(">")[0]
    assert 'data-testid="active-generation">#1</strong>' in status
    html = client.post("/kbs/gens/generations/rollback/", headers=HX).content.decode()
    assert "nothing to roll back to" in html
    assert 'title="Nothing to roll back to: no promote replaced a generation still kept' in html
    html = client.post(
        "/kbs/gens/generations/promote/", {"number": "2"}, headers=HX
    ).content.decode()
    assert "Generation #2 is active." in html
    assert 'data-testid="active-generation">#2</strong>' in html
    assert "Roll back to #1" in html  # the page says where a rollback goes before it is clicked
    html = client.post(
        "/kbs/gens/generations/promote/", {"number": "x"}, headers=HX
    ).content.decode()
    assert "choose a generation to promote" in html
    html = client.post("/kbs/gens/generations/gc/", headers=HX).content.decode()
    assert "Garbage collection: collected nothing." in html
    unknown = client.post("/kbs/gens/generations/explode/", headers=HX)
    assert unknown.status_code == 404 and "Not found" in unknown.text
    kb.refresh_from_db()
    assert kb.active_generation.number == 2  # nothing happened
    redirect = client.post("/kbs/gens/generations/rollback/")
    assert redirect.status_code == 302 and redirect["Location"] == "/kbs/gens/generations/"


def test_rebuild_form_validates_and_starts_a_rebuild(alice, indexed, login) -> None:
    client = login(alice)
    bad = client.post("/kbs/docs/generations/rebuild/", {"chunk_size": "5"}, headers=HX)
    assert bad.status_code == 422 and 'data-testid="error-chunk_size"' in bad.content.decode()
    bad = client.post(
        "/kbs/docs/generations/rebuild/", {"chunk_size": "64", "chunk_overlap": "60"}, headers=HX
    )
    assert (
        bad.status_code == 422
        and "chunk overlap must be between 0 and half" in bad.content.decode()
    )
    bad = client.post("/kbs/docs/generations/rebuild/", {"embedder": "nope"}, headers=HX)
    assert bad.status_code == 422 and "unknown embedder" in bad.content.decode()
    ok = client.post(
        "/kbs/docs/generations/rebuild/",
        {"chunk_size": "48", "chunk_overlap": "4", "auto_promote": "on"},
        headers=HX,
    )
    html = ok.content.decode()
    job = IngestionJob.objects.get(kind="rebuild")
    assert ok.status_code == 200 and f"Rebuild started: job #{job.pk} builds generation #2." in html
    assert job.auto_promote and job.generation.chunk_size == 48
    assert 'title="A rebuild is already running"' in html and "every 2s" in html


def test_job_page_chart_and_htmx_cancel(alice, login) -> None:
    kb = make_kb(alice, "docs")
    job = upload(kb, [("a.txt", b"words here")]).job
    IngestionJob.objects.filter(pk=job.pk).update(
        status="running",
        total=100,
        total_known=True,
        embedded=60,
        persisted=40,
        buffered=20,
        samples=[[0, 0, 0], [1, 20, 0], [2, 40, 20], [3, 60, 40]],
    )
    client = login(alice)
    html = client.get(f"/jobs/{job.pk}/", headers=HX).content.decode()
    assert 'class="fill embedded" data-fill="60.00"' in html
    assert 'class="fill persisted" data-fill="40.00"' in html
    assert 'class="fill buffered"' in html and 'data-fill="20.00"' in html
    assert '<polyline class="embedded"' in html and "every 1s" in html
    cancelled = client.post(f"/jobs/{job.pk}/cancel/", headers=HX).content.decode()
    assert is_fragment(cancelled, '<section id="job-progress"') and "cancelling" in cancelled


def test_other_users_get_404_and_shared_users_read_only(alice, indexed, login) -> None:
    bob, carol = make_user("bob"), make_user("carol")
    indexed.shared_with.add(bob)
    job = indexed.jobs.first()
    doc = indexed.documents.first()
    reads = [
        "/kbs/docs/",
        "/kbs/docs/generations/",
        "/kbs/docs/search/?q=enzymes",
        f"/jobs/{job.pk}/",
    ]
    writes = [
        "/kbs/docs/upload/",
        f"/kbs/docs/documents/{doc.pk}/delete/",
        "/kbs/docs/generations/rollback/",
        "/kbs/docs/generations/gc/",
        "/kbs/docs/generations/rebuild/",
        f"/jobs/{job.pk}/cancel/",
    ]
    stranger, reader = login(carol), login(bob)
    for url in reads + writes:
        method = stranger.get if url in reads else stranger.post
        response = method(url)
        assert response.status_code == 404, url
        assert "404 · Not found" in response.content.decode()
    for url in reads:
        assert reader.get(url).status_code == 200, url
    page = reader.get("/kbs/docs/").content.decode()
    assert 'id="upload-form"' not in page and "Delete" not in page
    assert "Promote</button>" not in reader.get("/kbs/docs/generations/").content.decode()
    for url in writes:
        response = reader.post(url)
        assert response.status_code == 403, url
        assert "403 · Not allowed" in response.content.decode()
    assert Document.objects.filter(pk=doc.pk).exists()


def test_pages_require_login() -> None:
    for url in ("/", "/kbs/x/", "/jobs/1/"):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_create_a_kb_from_the_list_page(alice, login) -> None:
    client = login(alice)
    response = client.post("/", {"name": "Papers", "slug": "papers", "embedder": "local"})
    assert response.status_code == 302 and response["Location"] == "/kbs/papers/"
    page = client.get("/").content.decode()
    assert "Papers" in page and "none yet" in page


def test_the_create_form_shows_validation_errors(alice, login) -> None:
    client = login(alice)
    response = client.post("/", {"name": "X", "slug": "x", "embedder": "nonsense"})
    assert response.status_code == 422
    assert "unknown embedder" in response.content.decode()
    response = client.post(
        "/", {"name": "X", "slug": "x", "chunk_size": "100", "chunk_overlap": "90"}
    )
    assert "chunk overlap must be between 0 and half" in response.content.decode()
    assert not KnowledgeBase.objects.exists()


def test_upload_form_queues_a_job_and_reports_each_file(alice, login) -> None:
    user, client = alice, login(alice)
    kb = make_kb(user, "docs")
    response = client.post(
        "/kbs/docs/upload/",
        {
            "files": [
                SimpleUploadedFile("a.txt", text(5)),
                SimpleUploadedFile("x.gif", b"GIF89a\x00\x00"),
            ]
        },
        follow=True,
    )
    job = IngestionJob.objects.get(knowledge_base=kb)
    assert response.redirect_chain[-1][0] == f"/jobs/{job.pk}/"
    page = response.content.decode()
    assert (
        "Accepted a.txt." in page and "x.gif: rejected (unsupported file type: GIF image)." in page
    )
    assert 'hx-trigger="every 1s"' in page  # a queued job polls


def test_the_progress_partial_is_returned_to_htmx_and_stops_polling_when_done(alice, login) -> None:
    user, client = alice, login(alice)
    kb = make_kb(user, "docs")
    job = upload(kb, [("a.txt", b"words")]).job
    partial = client.get(f"/jobs/{job.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<section id="job-progress"') and "<html" not in partial
    full = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "<html" in full and 'id="job-progress"' in full
    IngestionJob.objects.filter(pk=job.pk).update(
        status="succeeded", total=10, embedded=10, persisted=10
    )
    IngestionJob.objects.filter(pk=job.pk).update(attempts=3)
    done = client.get(f"/jobs/{job.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in done and 'data-testid="persisted">10<' in done
    assert 'data-testid="attempts">3<' in done


def test_another_users_kb_and_job_are_404(alice, login) -> None:
    client = login(alice)
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
    # Refused, not just answered so: bob's KB and job are as they were.
    assert list(kb.documents.values_list("original_filename", flat=True)) == ["a.txt"]
    job.refresh_from_db()
    assert (job.status, job.cancel_requested) == ("queued", False)


def test_cancel_button_cancels_a_queued_job(alice, login) -> None:
    user, client = alice, login(alice)
    job = upload(make_kb(user, "docs"), [("a.txt", b"words")]).job
    client.post(f"/jobs/{job.pk}/cancel/")
    assert IngestionJob.objects.get(pk=job.pk).status == "cancelled"


def test_logins_are_throttled_after_repeated_wrong_passwords(alice, settings) -> None:
    """Issue 11, case 5: ten wrong passwords were all answered normally."""
    settings.AXES_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(2):
        wrong = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
        assert wrong.status_code == 200 and "correct username and password" in wrong.text
    third = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert third.status_code == 429 and "too many" in third.text.lower()
    locked = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert locked.status_code == 429  # even the right password, until the cool-off ends
    assert "_auth_user_id" not in client.session
    # Another user from the same address is not locked out.
    make_user("bob")
    other = client.post("/accounts/login/", {"username": "bob", "password": "pw-bob"})
    assert other.status_code == 302


def test_behind_a_proxy_a_lockout_is_the_client_address_not_the_proxy(alice, settings) -> None:
    """Issue 25, case 6: behind the TLS proxy every login came from the proxy's address,
    so five wrong passwords locked a user out for everyone."""
    settings.AXES_FAILURE_LIMIT = 3
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    attacker = Client(**proxy, HTTP_X_FORWARDED_FOR="203.0.113.9")
    for _ in range(3):
        attacker.post("/accounts/login/", {"username": "alice", "password": "nope"})
    refused = attacker.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert refused.status_code == 429
    # A forged address in front of the proxy's entry changes nothing for the attacker.
    forged = Client(**proxy, HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.9")
    assert (
        forged.post("/accounts/login/", {"username": "alice", "password": "pw-alice"}).status_code
        == 429
    )
    # Alice, from her own address through the same proxy, logs in.
    alice_client = Client(**proxy, HTTP_X_FORWARDED_FOR="192.0.2.44")
    ok = alice_client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert ok.status_code == 302
