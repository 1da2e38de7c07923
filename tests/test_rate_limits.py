"""Per-user rate limits on searches and uploads (issue 25): counted in the database, so
every web process agrees; past a limit 429 with Retry-After, before the body is read; other
users, staff and anonymous requests are not counted."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge_bases.models import RateCounter
from knowledge_bases.services import limits as limits_module
from knowledge_bases.services.limits import rate_counters_prune, rate_limit_take
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """Small limits, and one fixed moment (15 s into a minute) for the whole test, so no
    minute ends in the middle of it."""
    monkeypatch.setattr(limits_module, "clock", lambda: 1_000_000 * 60.0 + 15)
    settings.RAGSTUDIO = {
        **settings.RAGSTUDIO,
        "USER_SEARCHES_PER_MINUTE": 3,
        "USER_UPLOADS_PER_MINUTE": 2,
    }


def test_a_user_s_requests_are_counted_per_minute(limits, alice) -> None:
    minute = 1_000_000 * 60.0
    assert [rate_limit_take(user=alice, kind="search", now=minute + s) for s in (1, 2, 3)] == [
        0,
        0,
        0,
    ]
    assert rate_limit_take(user=alice, kind="search", now=minute + 15) == 45  # to the minute
    assert rate_limit_take(user=alice, kind="upload", now=minute + 15) == 0  # its own count
    assert rate_limit_take(user=alice, kind="search", now=minute + 61) == 0  # a new minute
    staff = make_user("root", is_staff=True)
    assert all(rate_limit_take(user=staff, kind="search", now=minute) == 0 for _ in range(9))
    assert rate_counters_prune(now=minute + 600) == 3
    assert not RateCounter.objects.exists()


def test_past_the_limit_every_search_surface_answers_429(limits, alice, client_for, login) -> None:
    kb = make_kb(alice, "notes")
    api = client_for(alice)
    statuses = [
        api.post("/api/kbs/notes/search", {"query": "x"}, content_type="application/json")
        for _ in range(3)
    ]
    assert [r.status_code for r in statuses] != [429] * 3
    refused = api.post("/api/kbs/notes/search", {"query": "x"}, content_type="application/json")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "45"
    assert "RAGSTUDIO_USER_SEARCHES_PER_MINUTE" in refused.json()["message"]
    # The OpenAI-compatible API answers in its own shape (its SDK retries on it).
    openai = api.post(
        f"/v1/vector_stores/{kb.slug}/search", {"query": "x"}, content_type="application/json"
    )
    assert openai.status_code == 429 and openai.json()["error"]["type"] == "rate_limit_exceeded"
    # The same user in the browser: the search page with a query too (the form alone is not).
    page = login(alice)
    assert page.get("/kbs/notes/search/").status_code == 200
    blocked = page.get("/kbs/notes/search/?q=alpha")
    assert blocked.status_code == 429 and "Too many requests" in blocked.content.decode()
    # Another user is not held back by alice's searches.
    bob = make_user("bob")
    make_kb(bob, "theirs")
    assert (
        client_for(bob)
        .post("/api/kbs/theirs/search", {"query": "x"}, content_type="application/json")
        .status_code
        != 429
    )


def test_past_the_upload_limit_nothing_is_stored(limits, alice, client_for) -> None:
    kb = make_kb(alice, "notes")
    api = client_for(alice)
    for n in range(2):
        response = api.post(
            "/api/kbs/notes/documents", {"files": [SimpleUploadedFile(f"{n}.txt", text(5 + n))]}
        )
        assert response.status_code == 202, response.content
    refused = api.post(
        "/api/kbs/notes/documents", {"files": [SimpleUploadedFile("late.txt", text(5))]}
    )
    assert refused.status_code == 429 and "Retry-After" in refused
    assert sorted(kb.documents.values_list("original_filename", flat=True)) == ["0.txt", "1.txt"]
    # The operator's command line and the services are not rate limited.
    upload(kb, [("cli.txt", text(9))])
    assert kb.documents.count() == 3
