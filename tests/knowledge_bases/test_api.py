from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from ingestion.jobs import run_job_and_queue
from knowledge_bases.models import ApiToken, KnowledgeBase
from tests.factories import make_kb, make_user, text

pytestmark = pytest.mark.django_db


def test_requests_without_a_valid_token_are_401(alice) -> None:
    anonymous = Client(enforce_csrf_checks=True)
    wrong = Client(headers={"Authorization": "Bearer rs_wrong"}, enforce_csrf_checks=True)
    for client in (anonymous, wrong):
        response = client.get("/api/kbs")
        assert response.status_code == 401
        assert response.json()["message"].startswith("authentication required")
        # Issue 11, case 7: writes answered 403 "CSRF check failed" instead.
        for call in (
            lambda c=client: c.post("/api/kbs", {"slug": "x", "name": "X"}, "application/json"),
            lambda c=client: c.delete("/api/kbs/x"),
            lambda c=client: c.post("/api/jobs/1/cancel"),
        ):
            response = call()
            assert response.status_code == 401, response.content
            assert response["WWW-Authenticate"] == "Bearer"
    assert not KnowledgeBase.objects.exists()
    # A browser session still needs its CSRF token for a write.
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    refused = browser.post("/api/kbs", {"slug": "x", "name": "X"}, "application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
    assert browser.get("/api/kbs").status_code == 200
    row, token = ApiToken.issue(user=alice)
    row.revoked_at = row.created_at
    row.save()
    assert Client(headers={"Authorization": f"Bearer {token}"}).get("/api/kbs").status_code == 401


def test_tokens_are_stored_only_as_hashes(alice) -> None:
    row, token = ApiToken.issue(user=alice)
    assert token.startswith("rs_") and token not in (row.key_hash, row.key_prefix)
    assert row.key_hash == ApiToken.hash(token)


def test_create_list_and_read_a_kb(alice, client_for) -> None:
    client = client_for(alice)
    response = client.post(
        "/api/kbs",
        {"slug": "papers", "name": "Papers", "chunk_size": 128},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["slug"], body["owner"], body["embedder"], body["embedding_dimensions"]) == (
        "papers",
        "alice",
        "local-fast",
        384,
    )
    assert body["chunk_size"] == 128 and body["active_generation"] is None
    assert [kb["slug"] for kb in client.get("/api/kbs").json()] == ["papers"]
    assert client.get("/api/kbs/papers").json()["name"] == "Papers"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "No slug"}, "slug"),
        ({"slug": "UPPER case", "name": "x"}, "slug"),
        ({"slug": "ok", "name": ""}, "name"),
        ({"slug": "ok", "name": "x", "chunk_size": 4}, "chunk_size"),
        ({"slug": "ok", "name": "x", "chunk_size": 300}, "chunk_size"),
        ({"slug": "ok", "name": "x", "chunk_size": 100, "chunk_overlap": 60}, "chunk_overlap"),
        ({"slug": "ok", "name": "x", "embedder": "bert"}, "embedder"),
    ],
)
def test_bad_kb_bodies_are_422_naming_the_field(alice, client_for, payload, field) -> None:
    response = client_for(alice).post("/api/kbs", payload, content_type="application/json")
    assert response.status_code == 422, response.content
    body = response.json()
    assert field in body["message"] or body["extra"].get("field") == field
    assert not KnowledgeBase.objects.exists()


def test_a_taken_slug_is_409(alice, client_for) -> None:
    make_kb(alice, "taken")
    response = client_for(alice).post(
        "/api/kbs", {"slug": "taken", "name": "T"}, content_type="application/json"
    )
    assert response.status_code == 409 and "already have" in response.json()["message"]


def test_slugs_are_per_owner_so_creating_one_reveals_nothing(alice, client_for) -> None:
    """Issue 11, case 7: a slug another user owned answered 409 "already exists" to a
    create while reading it answered 404, so anyone could probe for other users' KBs."""
    mine = make_kb(alice, "docs")
    bob = make_user("bob")
    as_bob = client_for(bob)
    created = as_bob.post("/api/kbs", {"slug": "docs", "name": "Bob's"}, "application/json")
    assert created.status_code == 201, created.content
    assert created.json()["ref"] == "bob~docs"
    # Each owner's bare slug names their own KB; neither can reach the other's.
    assert as_bob.get("/api/kbs/docs").json()["name"] == "Bob's"
    assert client_for(alice).get("/api/kbs/docs").json()["name"] == "Docs"
    assert as_bob.get("/api/kbs/alice~docs").status_code == 404
    assert as_bob.get("/api/kbs/carol~docs").status_code == 404
    assert as_bob.delete("/api/kbs/alice~docs").status_code == 404
    assert KnowledgeBase.objects.filter(slug="docs").count() == 2
    # Shared with bob, alice's KB is reachable by its full name, his own still by the slug.
    mine.shared_with.add(bob)
    assert as_bob.get("/api/kbs/alice~docs").json()["name"] == "Docs"
    assert as_bob.get("/api/kbs/docs").json()["name"] == "Bob's"
    assert as_bob.delete("/api/kbs/alice~docs").status_code == 403


def test_a_slug_that_names_several_visible_kbs_is_409_listing_them(
    alice, client_for, login
) -> None:
    make_kb(alice, "docs")
    make_kb(make_user("bob"), "docs")
    make_kb(alice, "solo")
    root = make_user("root", is_staff=True)
    staff = client_for(root)
    ambiguous = staff.get("/api/kbs/docs")
    assert ambiguous.status_code == 409
    assert ambiguous.json()["extra"]["candidates"] == ["alice~docs", "bob~docs"]
    assert staff.get("/api/kbs/bob~docs").json()["owner"] == "bob"
    assert staff.get("/api/kbs/solo").json()["owner"] == "alice"
    # Pages link every KB by a name that reaches it.
    staff = login(root)
    page = staff.get("/").content.decode()
    for ref in ("alice~docs", "bob~docs"):
        assert f'href="/kbs/{ref}/"' in page
        assert staff.get(f"/kbs/{ref}/").status_code == 200
    assert 'href="/kbs/solo/"' in page
    assert staff.get("/kbs/docs/").status_code == 400
    # The command line sees every KB: the same rule, the same names.
    with pytest.raises(CommandError, match="alice~docs"):
        call_command("generations", "docs", "list", stdout=io.StringIO())
    out = io.StringIO()
    call_command("generations", "bob~docs", "list", "--json", stdout=out)
    assert json.loads(out.getvalue()) == []


def test_someone_elses_kb_is_404_and_staff_can_read_it(alice, client_for) -> None:
    make_kb(alice, "private")
    bob = client_for(make_user("bob"))
    assert bob.get("/api/kbs/private").status_code == 404
    assert bob.get("/api/kbs").json() == []
    upload = bob.post("/api/kbs/private/documents", {"files": [SimpleUploadedFile("a.txt", b"hi")]})
    assert upload.status_code == 404
    staff = client_for(make_user("root", is_staff=True))
    assert staff.get("/api/kbs/private").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_upload_then_follow_the_job_to_the_end(alice, client_for) -> None:
    make_kb(alice, "docs")
    client = client_for(alice)
    response = client.post(
        "/api/kbs/docs/documents",
        {
            "files": [
                SimpleUploadedFile("a.txt", text(20)),
                SimpleUploadedFile("b.txt", text(20)),  # same bytes: a duplicate
                SimpleUploadedFile("c.bin", b"\x00\x01\x02" * 100),
            ],
            "store_batch_size": "3",
        },
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert [d["original_filename"] for d in body["accepted"]] == ["a.txt"]
    assert body["rejected"] == [
        {"filename": "b.txt", "reason": "duplicate of 'a.txt' in this upload"},
        {"filename": "c.bin", "reason": "unsupported file type: binary data"},
    ]
    job = body["job"]
    assert (job["status"], job["store_batch_size"], job["knowledge_base"]) == ("queued", 3, "docs")
    run_job_and_queue(job["id"])
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "succeeded"
    assert done["total"] == done["embedded"] == done["persisted"] > 0
    assert done["buffered"] == 0 and done["documents_done"] == 1
    documents = client.get("/api/kbs/docs/documents").json()
    assert documents[0]["status"] == "indexed" and documents[0]["chunk_count"] == done["total"]
    again = client.post(
        "/api/kbs/docs/documents", {"files": [SimpleUploadedFile("a2.txt", text(20))]}
    )
    assert again.status_code == 200 and again.json()["job"] is None
    assert again.json()["duplicates"][0]["existing_filename"] == "a.txt"


def test_upload_validation(alice, client_for) -> None:
    make_kb(alice, "docs")
    client = client_for(alice)
    assert client.post("/api/kbs/docs/documents", {}).status_code == 422
    only_bad = client.post("/api/kbs/docs/documents", {"files": [SimpleUploadedFile("e.txt", b"")]})
    assert only_bad.status_code == 422
    assert only_bad.json()["extra"]["rejected"][0]["reason"].startswith("empty file")
    bad_size = client.post(
        "/api/kbs/docs/documents",
        {"files": [SimpleUploadedFile("a.txt", b"hello")], "store_batch_size": "0"},
    )
    assert bad_size.status_code == 422 and "store_batch_size" in bad_size.json()["message"]


def test_jobs_of_other_users_are_404_and_finished_jobs_cannot_be_cancelled(
    alice, client_for
) -> None:
    kb = make_kb(alice, "docs")
    from tests.factories import upload

    job = upload(kb, [("a.txt", b"some words")]).job
    assert client_for(make_user("bob")).get(f"/api/jobs/{job.pk}").status_code == 404
    client = client_for(alice)
    assert client.post(f"/api/jobs/{job.pk}/cancel").json()["status"] == "cancelled"
    conflict = client.post(f"/api/jobs/{job.pk}/cancel")
    assert conflict.status_code == 409 and "already finished" in conflict.json()["message"]
    assert client.get("/api/jobs/999999").status_code == 404


def test_openapi_schema_documents_the_routes(alice, client_for) -> None:
    schema = client_for(alice).get("/api/openapi.json").json()
    assert {"/api/kbs", "/api/kbs/{slug}/documents", "/api/jobs/{job_id}"} <= set(schema["paths"])


def _bounds_keys(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {
            k for k, v in node.items() if k in {"ge", "le", "gt", "lt"} and not isinstance(v, dict)
        }
        return found.union(*(_bounds_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_bounds_keys(v) for v in node))
    return set()


def test_every_bounded_integer_reaches_the_schema_as_minimum_and_maximum(alice, client_for) -> None:
    # pydantic writes bounds it cannot place on a type as `ge`/`le`, which no client or
    # fuzzer reads: a schema-valid request would then be refused.
    schema = client_for(alice).get("/api/openapi.json").json()
    assert _bounds_keys(schema) == set()
    update = schema["components"]["schemas"]["SourceUpdateIn"]["properties"]["schedule_minutes"]
    assert {"minimum": 0, "maximum": 10080, "type": "integer"}.items() <= update["anyOf"][0].items()


@pytest.mark.slow
def test_delete_a_document_through_the_api(alice, client_for) -> None:
    kb = make_kb(alice, "docs")
    client = client_for(alice)
    response = client.post(
        "/api/kbs/docs/documents",
        {"files": [SimpleUploadedFile("a.txt", text(20)), SimpleUploadedFile("b.txt", text(9))]},
    )
    run_job_and_queue(response.json()["job"]["id"])
    doc_id = response.json()["accepted"][0]["id"]
    bob = make_user("bob")
    kb.shared_with.add(bob)
    assert client_for(bob).delete(f"/api/kbs/docs/documents/{doc_id}").status_code == 403
    assert client.delete(f"/api/kbs/docs/documents/{doc_id}").status_code == 204
    assert client.delete(f"/api/kbs/docs/documents/{doc_id}").status_code == 404
    remaining = client.get("/api/kbs/docs/documents").json()
    assert [d["original_filename"] for d in remaining] == ["b.txt"]
    kb.refresh_from_db()
    assert kb.active_generation.chunk_count == remaining[0]["chunk_count"]


def test_a_token_is_revoked_by_its_whole_prefix_only(alice) -> None:
    """Issue 11, case 6: `api_token USER --revoke rs_` revoked every token."""
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    first, _ = ApiToken.issue(user=alice)
    second, _ = ApiToken.issue(user=alice)
    with pytest.raises(CommandError, match="the whole 10-character prefix"):
        call_command("api_token", "alice", "--revoke", "rs_", stdout=io.StringIO())
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 2
    call_command("api_token", "alice", "--revoke", first.key_prefix, stdout=io.StringIO())
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is not None and second.revoked_at is None


def test_a_token_made_in_the_admin_never_travels_in_a_cookie(alice, login) -> None:
    """Issue 11, case 6: the token was shown through the messages framework, which kept
    it in the readable `messages` cookie."""
    staff = login(make_user("root", is_staff=True, is_superuser=True))
    saved = staff.post(
        "/admin/knowledge_bases/apitoken/add/", {"user": alice.pk, "name": "ci", "scope": "read"}
    )
    assert saved.status_code == 302
    page = staff.get(saved["Location"]).content.decode()
    token = ApiToken.objects.get(name="ci")
    assert token.scope == "read"  # the admin sets the key's scope too
    shown = page.split("copy it now): ")[1].split("<")[0]
    assert shown.startswith(token.key_prefix) and ApiToken.hash(shown) == token.key_hash
    # The messages travel in the server-side session, not in a cookie the browser keeps
    # (Django's default stores them signed but readable, possibly compressed).
    assert set(saved.cookies) <= {"sessionid", "csrftoken"}, saved.cookies


def test_a_request_django_refuses_is_a_json_error(alice, client_for, settings) -> None:
    """Issue 11, case 7: 1,001 files got Django's HTML 400 page from the JSON API."""
    make_kb(alice, "docs")
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [SimpleUploadedFile(f"f{i}.txt", b"words") for i in range(4)]
    response = client_for(alice).post("/api/kbs/docs/documents", {"files": files})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["message"] == "too many files in one request: at most 3"
    assert not KnowledgeBase.objects.get(slug="docs").documents.exists()


def test_users_choose_only_allowed_embedders_and_stay_within_quotas(
    alice, client_for, settings
) -> None:
    """Issue 11, case 5: any user could create a KB with a multi-GB model or one billed to
    the operator's API key, and had no limit on knowledge bases or stored bytes."""
    settings.RAGSTUDIO = {
        **settings.RAGSTUDIO,
        "QUOTA_KNOWLEDGE_BASES": 2,
        "QUOTA_BYTES": 100,
    }
    client = client_for(alice)
    for spec in ("openai:text-embedding-3-large", "fastembed:intfloat/multilingual-e5-large"):
        refused = client.post(
            "/api/kbs", {"slug": "big", "name": "Big", "embedder": spec}, "application/json"
        )
        assert refused.status_code == 403, refused.content
        assert (
            "is for staff only here (yours to choose: local, local-fast)"
            in refused.json()["message"]
        )
    staff = client_for(make_user("root", is_staff=True))
    made = staff.post(
        "/api/kbs",
        {"slug": "paid", "name": "Paid", "embedder": "openai:text-embedding-3-small"},
        "application/json",
    )
    assert made.status_code == 201 and made.json()["embedder"] == "openai:text-embedding-3-small"

    for slug in ("one", "two"):
        assert (
            client.post("/api/kbs", {"slug": slug, "name": slug}, "application/json").status_code
            == 201
        )
    third = client.post("/api/kbs", {"slug": "three", "name": "Three"}, "application/json")
    assert third.status_code == 403 and "you own 2 knowledge bases" in third.json()["message"]

    files = [SimpleUploadedFile("a.txt", b"x" * 60), SimpleUploadedFile("b.txt", b"y" * 60)]
    body = client.post("/api/kbs/one/documents", {"files": files}).json()
    assert [d["original_filename"] for d in body["accepted"]] == ["a.txt"]
    assert body["rejected"] == [
        {"filename": "b.txt", "reason": "over the storage quota: 60 of 100 bytes used"}
    ]
    assert not list(
        (settings.RAGSTUDIO["UPLOAD_DIR"] / f"kb{KnowledgeBase.objects.get(slug='one').pk}").glob(
            ".upload-*"
        )
    )


def test_a_request_over_the_total_limit_is_refused_before_it_is_read(
    alice, client_for, settings
) -> None:
    """Issue 11, case 5: there was no total body limit; Django spooled the whole body."""
    make_kb(alice, "docs")
    settings.RAGSTUDIO_MAX_REQUEST_BYTES = 1000
    files = [SimpleUploadedFile(f"f{i}.txt", b"w" * 400) for i in range(3)]
    response = client_for(alice).post("/api/kbs/docs/documents", {"files": files})
    assert response.status_code == 413
    assert response.json()["message"].startswith("the request body is ")
    assert response.json()["extra"] == {"limit": 1000}
    assert not KnowledgeBase.objects.get(slug="docs").documents.exists()
    one = SimpleUploadedFile("one.txt", b"w" * 400)
    small = client_for(alice).post("/api/kbs/docs/documents", {"files": [one]})
    assert small.status_code == 202, small.content


def test_a_file_over_the_limit_is_cut_off_while_it_streams_in(alice, client_for, settings) -> None:
    """Issue 11, case 5: the per-file limit was checked after Django spooled the whole
    body; now the upload handler stops reading the file at the limit."""
    make_kb(alice, "docs")
    settings.RAGSTUDIO_MAX_UPLOAD_BYTES = 1000
    files = [
        SimpleUploadedFile("big.txt", b"b" * 5000),
        SimpleUploadedFile("small.txt", b"small words"),
    ]
    response = client_for(alice).post("/api/kbs/docs/documents", {"files": files})
    assert response.status_code == 202, response.content
    body = response.json()
    assert [d["original_filename"] for d in body["accepted"]] == ["small.txt"]
    assert body["rejected"] == [
        {"filename": "big.txt", "reason": "file too large: over 1,000 bytes (the limit)"}
    ]
    # Cut off by the upload handler while the body was read, not after it was stored.
    assert response.wsgi_request.oversized_uploads == ["big.txt"]


def test_a_single_file_over_the_limit_is_called_too_large_not_missing(
    alice, client_for, settings
) -> None:
    """Issue 25, case 9: the only file, cut off at the limit, answered 'files: Field
    required'."""
    make_kb(alice, "docs")
    settings.RAGSTUDIO_MAX_UPLOAD_BYTES = 1000
    response = client_for(alice).post(
        "/api/kbs/docs/documents", {"files": [SimpleUploadedFile("big.txt", b"b" * 5000)]}
    )
    assert response.status_code == 413, response.content
    body = response.json()
    assert body["message"] == "big.txt: file too large: over 1,000 bytes (the limit)"
    assert body["extra"]["rejected"] == [
        {"filename": "big.txt", "reason": "file too large: over 1,000 bytes (the limit)"}
    ]
