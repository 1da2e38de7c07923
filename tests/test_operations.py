"""Operating it (issue 28): the audit trail (who did what, when, from where), /metrics in
the Prometheus text format, /readyz's dependency checks, JSON log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.models import AuditEvent, Generation
from knowledge_bases.services import (
    audit_events_prune,
    generation_promote,
    generation_rollback,
)
from ragstudio.testing.generations import make_generation
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_api_actions_are_audited_with_who_when_and_from_where(alice, client_for) -> None:  # type: ignore[no-untyped-def]
    api = client_for(alice)
    created = api.post(
        "/api/kbs",
        {"slug": "notes", "name": "Notes"},
        content_type="application/json",
        REMOTE_ADDR="192.0.2.7",
    )
    assert created.status_code == 201, created.content
    sent = api.post(
        "/api/kbs/notes/documents",
        {"files": [_file("a.txt", text(5, "alpha")), _file("b.txt", text(5, "beta"))]},
        REMOTE_ADDR="192.0.2.7",
    )
    assert sent.status_code in (200, 201, 202), sent.content
    gate = api.patch(
        "/api/kbs/notes",
        {"quality_gate": {"hybrid:ndcg@10": 0.05}},
        content_type="application/json",
    )
    assert gate.status_code == 200, gate.content
    document_id = sent.json()["accepted"][0]["id"]
    run_job_and_queue(sent.json()["job"]["id"])
    assert api.delete(f"/api/kbs/notes/documents/{document_id}").status_code == 204

    (kb_event,) = events("kb.create")
    assert (kb_event.actor, kb_event.actor_name, kb_event.via) == (alice, "alice", "api")
    assert kb_event.ip == "192.0.2.7" and kb_event.kb_slug == "notes"
    (uploaded,) = events("documents.upload")
    assert uploaded.actor == alice and uploaded.target == "a.txt, b.txt"
    assert uploaded.detail["counts"]["new"] == 2 and uploaded.detail["job"] is not None
    (changed,) = events("kb.update")
    assert set(changed.detail) == {"quality_gate"}
    assert changed.detail["quality_gate"]["to"]["hybrid:ndcg@10"] == 0.05
    (deleted,) = events("document.delete")
    assert deleted.actor == alice and deleted.target == f"document {document_id} a.txt"
    # Same content again changes nothing, and records nothing.
    again = api.post("/api/kbs/notes/documents", {"files": [_file("a2.txt", text(5, "beta"))]})
    assert again.status_code in (200, 201, 202)
    assert len(events("documents.upload")) == 1


def _file(name: str, data: bytes):  # type: ignore[no-untyped-def]
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="text/plain")


def test_keys_and_sign_ins_are_audited(alice, login) -> None:  # type: ignore[no-untyped-def]
    made = login(alice).post("/api/keys", {"name": "ci"}, content_type="application/json")
    assert made.status_code == 201
    key_id = made.json()["id"]
    assert login(alice).delete(f"/api/keys/{key_id}").status_code in (200, 204)
    (created,) = events("key.create")
    assert created.actor == alice and created.target.endswith(" ci")
    assert created.target.split()[1] == made.json()["prefix"]
    (revoked,) = events("key.revoke")
    assert revoked.target == created.target

    alice.set_password("right-password")
    alice.save()
    browser = Client(REMOTE_ADDR="198.51.100.9")
    browser.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    browser.post("/accounts/login/", {"username": "alice", "password": "right-password"})
    browser.post("/accounts/logout/")
    (failed,) = events("auth.login_failed")
    assert failed.actor is None and failed.actor_name == "alice" and failed.ip == "198.51.100.9"
    # (the test client's force_login signs in too, outside any request: via "system")
    (signed_in,) = [e for e in events("auth.login") if e.via == "web"]
    assert signed_in.actor == alice and signed_in.ip == "198.51.100.9"
    assert len(events("auth.logout")) == 1
    for _ in range(6):
        browser.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    lockouts = events("auth.lockout")
    assert lockouts and lockouts[0].actor_name == "alice" and lockouts[0].ip == "198.51.100.9"


def test_generation_actions_are_audited_with_what_they_replaced() -> None:
    owner = make_user("owner")
    kb = make_kb(owner, "life")
    make_generation(kb, Generation.Status.ACTIVE)
    second = make_generation(kb, Generation.Status.READY)
    generation_promote(kb=kb, number=second.number, actor=owner)
    kb.refresh_from_db()
    generation_rollback(kb=kb, actor=owner)
    (promoted,) = events("generation.promote")
    assert promoted.target == "generation #2" and promoted.detail == {"replaced": 1}
    (rolled,) = events("generation.rollback")
    assert rolled.target == "generation #1" and rolled.detail == {"replaced": 2}
    assert rolled.actor == owner and rolled.via == "system"


def test_the_audit_page_is_for_staff_and_filters(alice, login) -> None:  # type: ignore[no-untyped-def]
    staff = make_user("root", is_staff=True)
    kb = make_kb(alice, "alpha")
    run_job_and_queue(upload(kb, [("notes.txt", text(4, "alpha"))], user=alice).job.pk)
    AuditEvent.record(AuditEvent.Action.KEY_CREATE, actor=staff, target="key rs_x k")
    assert login(alice).get("/audit/").status_code == 302  # to the admin's sign-in
    page = login(staff).get("/audit/", {"action": "documents"})
    body = page.content.decode()
    assert page.status_code == 200 and "notes.txt" in body and "rs_x" not in body
    by_actor = login(staff).get("/audit/", {"actor": "root"}).content.decode()
    assert "rs_x" in by_actor and "notes.txt" not in by_actor
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    later = login(staff).get("/audit/", {"since": tomorrow}).content.decode()
    assert "No events match these filters" in later
    bad = login(staff).get("/audit/", {"since": "yesterday", "action": "nope"}).content.decode()
    assert "since must be a date" in bad and "unknown action" in bad


def test_old_audit_events_are_pruned_after_the_retention() -> None:
    old = AuditEvent.record(AuditEvent.Action.LOGIN, actor_name="old")
    recent = AuditEvent.record(AuditEvent.Action.LOGIN, actor_name="recent")
    AuditEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=400))
    assert audit_events_prune() == 1
    assert list(AuditEvent.objects.values_list("pk", flat=True)) == [recent.pk]
    with override_settings(AUDIT_RETENTION_DAYS=1000):
        assert audit_events_prune() == 0


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_requests_searches_and_read_the_queue(alice, client_for) -> None:  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "alpha")
    run_job_and_queue(upload(kb, [("notes.txt", text(6, "alpha"))]).job.pk)
    upload(kb, [("more.txt", text(6, "beta"))], enqueue=False)  # stays queued
    IngestionJob.objects.filter(status=IngestionJob.Status.QUEUED).update(
        created_at=timezone.now() - timedelta(seconds=90)
    )
    scraper = Client()
    before = _samples(scraper.get("/metrics").content)
    api = client_for(alice)
    for _ in range(3):
        found = api.post(
            "/api/kbs/alpha/search",
            {"query": "alpha", "mode": "hybrid"},
            content_type="application/json",
        )
        assert found.status_code == 200
    response = scraper.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    after = _samples(response.content)
    searches = ("ragstudio_searches_total", (("mode", "hybrid"),))
    assert after[searches] - before.get(searches, 0) == 3
    route = (
        "ragstudio_http_requests_total",
        (("method", "POST"), ("route", "api/kbs/<slug>/search"), ("status", "200")),
    )
    assert after[route] - before.get(route, 0) == 3
    assert after[("ragstudio_queue_depth", ())] == 1
    assert 89 <= after[("ragstudio_queue_oldest_age_seconds", ())] < 600
    assert after[("ragstudio_jobs", (("kind", "ingest"), ("status", "succeeded")))] == 1
    assert after[("ragstudio_generations", (("status", "active"),))] == 1
    assert after[("ragstudio_chunks_persisted_total", ())] > 0
    assert after[("ragstudio_storage_bytes", (("kind", "uploads"),))] > 0
    assert ("ragstudio_search_duration_seconds_count", (("mode", "hybrid"),)) in after


def test_metrics_are_refused_to_other_addresses_unless_the_token_is_sent() -> None:
    outside = Client(REMOTE_ADDR="203.0.113.5")
    assert outside.get("/metrics").status_code == 403
    with override_settings(METRICS_TOKEN="scrape-secret"):
        assert outside.get("/metrics").status_code == 403
        wrong = outside.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        right = outside.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert right.status_code == 200 and b"ragstudio_queue_depth" in right.content


def test_readyz_checks_the_broker_and_the_store() -> None:
    from ragstudio import readiness

    readiness._dependencies = (0.0, {})
    body = Client().get("/readyz").json()
    assert body["checks"]["broker"] == "ok" and body["checks"]["store"] == "ok"


@pytest.mark.subprocess
def test_json_logs_give_one_object_per_request_with_its_id(tmp_path: Path) -> None:
    script = (
        "from django.test import Client\n"
        "c = Client(HTTP_HOST='127.0.0.1')\n"
        "c.get('/healthz', headers={'X-Request-ID': 'req-42'})\n"
        "c.get('/no/such/page')\n"
    )
    # No database: these two requests read none.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RAGSTUDIO_"))}
    base |= {"DJANGO_SETTINGS_MODULE": "ragstudio.settings", "RAGSTUDIO_DATA_DIR": str(tmp_path)}
    env = {**base, "RAGSTUDIO_LOG_FORMAT": "json", "RAGSTUDIO_LOG_LEVEL": "INFO"}
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("logger") == "ragstudio.requests"]
    assert [(r["path"], r["status"]) for r in requests] == [
        ("/healthz", 200),
        ("/no/such/page", 404),
    ]
    assert requests[0]["request_id"] == "req-42" and requests[0]["route"] == "healthz"
    assert len(requests[1]["request_id"]) == 32 and requests[1]["duration_ms"] >= 0
    assert all({"time", "level", "message"} <= set(r) for r in requests)
    plain = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env={**base, "RAGSTUDIO_LOG_LEVEL": "INFO"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0 and "/healthz" not in plain.stderr
