"""Keys a user makes (issue 26, item 4): named, read-only or read-write, limited to some
knowledge bases, expiring; the secret shown once; revoked at once; staff see all."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from ingestion.jobs import run_job_and_queue
from knowledge_bases.models import ApiToken
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db


def bearer(key: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def two_kbs(alice):  # type: ignore[no-untyped-def]
    for slug in ("alpha", "beta"):
        kb = make_kb(alice, slug)
        run_job_and_queue(upload(kb, [("notes.txt", text(6, slug))]).job.pk)


def _make_key(client: Client, **body):  # type: ignore[no-untyped-def]
    response = client.post("/api/keys", body, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_read_key_limited_to_one_kb_searches_it_and_nothing_else(
    alice,  # type: ignore[no-untyped-def]
    two_kbs,  # type: ignore[no-untyped-def]
    login,  # type: ignore[no-untyped-def]
) -> None:
    made = _make_key(login(alice), name="dify app", scope="read", knowledge_bases=["alpha"])
    assert made["key"].startswith("rs_") and made["knowledge_bases"] == ["alice~alpha"]
    assert made["prefix"] == made["key"][:10] and made["scope"] == "read"
    key = bearer(made["key"])
    search = {"query": "alpha", "mode": "lexical"}
    assert (
        key.post("/api/kbs/alpha/search", search, content_type="application/json").status_code
        == 200
    )
    assert (
        key.post("/api/kbs/beta/search", search, content_type="application/json").status_code == 404
    )
    assert [kb["slug"] for kb in key.get("/api/kbs").json()] == ["alpha"]
    upload_attempt = key.post("/api/kbs/alpha/documents", {"files": []})
    assert upload_attempt.status_code == 403 and "read-only" in upload_attempt.json()["message"]
    assert key.delete("/api/kbs/alpha").status_code == 403
    assert key.post("/api/keys", {"name": "x"}, content_type="application/json").status_code == 403
    # The secret is never listed again; last use is recorded.
    listed = login(alice).get("/api/keys").json()
    assert "key" not in listed[0] and listed[0]["last_used_at"] is not None


def test_a_write_key_made_with_a_limited_key_is_limited_too(alice, two_kbs, login) -> None:  # type: ignore[no-untyped-def]
    limited = _make_key(login(alice), name="ci", scope="write", knowledge_bases=["alpha"])
    child = _make_key(bearer(limited["key"]), name="child", scope="write")
    assert child["knowledge_bases"] == ["alice~alpha"]
    refused = bearer(limited["key"]).post(
        "/api/keys", {"name": "wider", "knowledge_bases": ["beta"]}, content_type="application/json"
    )
    assert refused.status_code == 422 and "not found" in refused.json()["message"]


def test_expired_and_revoked_keys_are_refused(alice, two_kbs, login) -> None:  # type: ignore[no-untyped-def]
    session = login(alice)
    made = _make_key(session, name="short", scope="read", expires_in_days=1)
    key = bearer(made["key"])
    assert key.get("/api/kbs").status_code == 200
    ApiToken.objects.filter(pk=made["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert key.get("/api/kbs").status_code == 401
    other = _make_key(session, name="gone", scope="write")
    assert session.delete(f"/api/keys/{other['id']}").status_code == 204
    assert bearer(other["key"]).get("/api/kbs").status_code == 401


def test_bad_key_requests_get_clear_errors(alice, login) -> None:  # type: ignore[no-untyped-def]
    session = login(alice)
    for body, field in [
        ({"name": ""}, "name"),
        ({"name": "x", "scope": "admin"}, "scope"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "knowledge_bases": ["nope"]}, "knowledge_bases"),
    ]:
        response = session.post("/api/keys", body, content_type="application/json")
        assert response.status_code == 422, (body, response.content)
        assert field in response.content.decode()
    assert session.delete("/api/keys/999999").status_code == 404


def test_the_keys_page_makes_shows_once_and_revokes(alice, two_kbs, login) -> None:  # type: ignore[no-untyped-def]
    page = login(alice)
    response = page.post(
        "/keys/", {"name": "claude desktop", "scope": "read", "knowledge_bases": ["beta"]}
    )
    assert response.status_code == 302  # a reload of what follows makes no second key
    shown = page.get("/keys/")
    html = shown.content.decode()
    assert 'data-testid="new-key-secret"' in html and shown["Cache-Control"] == "no-store"
    row = ApiToken.objects.get(name="claude desktop")
    assert row.scope == "read" and [kb.slug for kb in row.knowledge_bases.all()] == ["beta"]
    again = page.get("/keys/").content.decode()
    assert (
        'data-testid="new-key-secret"' not in again
        and "claude desktop" in again
        and "alice~beta" in again
    )
    assert page.post(f"/keys/{row.pk}/revoke/").status_code == 302
    row.refresh_from_db()
    assert row.revoked_at is not None
    # Someone else cannot revoke it (and does not see it); staff see every key.
    bob = make_user("bob")
    assert login(bob).post(f"/keys/{row.pk}/revoke/").status_code == 404
    assert "claude desktop" not in login(bob).get("/keys/").content.decode()
    staff = make_user("sam", is_staff=True)
    assert "claude desktop" in login(staff).get("/keys/").content.decode()


def test_names_that_no_database_stores_are_refused(alice, login) -> None:  # type: ignore[no-untyped-def]
    """Found by schemathesis on PostgreSQL: a lone surrogate (JSON can carry one) or a NUL
    in a key's name was a 500."""
    session = login(alice)
    for name in ("\ud9b5 key", "nul\x00key"):
        body = json.dumps({"name": name})  # escapes both: valid JSON
        response = session.post("/api/keys", body, content_type="application/json")
        assert response.status_code == 422, (name, response.content)
        assert "name" in response.json()["message"]
    assert not ApiToken.objects.exists()
