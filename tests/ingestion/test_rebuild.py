"""Rebuilds: a new generation from all documents while the active one serves, with
vector reuse by content hash, late uploads taken in, check and promotion."""

from __future__ import annotations

import pytest

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from ingestion.services import ingestion_job_create, ingestion_job_retry
from knowledge_bases.generations import generation_store
from knowledge_bases.models import Document, Generation
from knowledge_bases.services import (
    generation_promote,
    generation_rebuild_start,
    generation_rollback,
)
from ragstudio.core.errors import Conflict, ValidationError
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db(transaction=True)
S = Generation.Status


@pytest.fixture
def kb():  # type: ignore[no-untyped-def]
    kb = make_kb(make_user(), "rb")
    job = upload(
        kb, [("a.txt", text(30)), ("b.txt", text(30, "art")), ("c.txt", text(20, "law"))]
    ).job
    run_job_and_queue(job.pk)
    kb.refresh_from_db()
    assert kb.active_generation.number == 1
    return kb


def _run(job: IngestionJob) -> IngestionJob:
    run_job_and_queue(job.pk)
    return IngestionJob.objects.get(pk=job.pk)


def _doc_ids(generation: Generation) -> set[int]:
    return {
        r["document_id"] for r in generation_store(generation).vectors.rows(columns=["document_id"])
    }


def test_rebuilding_an_unchanged_kb_reuses_every_vector_and_auto_promotes(kb) -> None:
    first = kb.active_generation
    job = _run(generation_rebuild_start(kb=kb, auto_promote=True, enqueue=False))
    assert job.status == "succeeded" and job.kind == "rebuild"
    assert (job.embedded, job.skipped) == (0, job.total) and job.total == first.chunk_count
    kb.refresh_from_db()
    second = kb.active_generation
    assert second.number == 2 and second.check_passed is True
    assert [e.to_status for e in second.events.order_by("id")] == ["building", "ready", "active"]
    first.refresh_from_db()
    assert first.status == S.ARCHIVED
    assert generation_store(second).vectors.ids() == generation_store(first).vectors.ids()


def test_a_rebuild_with_new_chunking_waits_for_promotion_and_then_takes_over(kb) -> None:
    job = _run(generation_rebuild_start(kb=kb, chunk_size=32, chunk_overlap=4, enqueue=False))
    assert job.embedded > 0
    new = Generation.objects.get(knowledge_base=kb, number=2)
    assert (new.status, new.chunk_size) == (S.READY, 32)
    assert new.check_passed is True, new.check_report
    kb.refresh_from_db()
    assert kb.active_generation.number == 1 and kb.chunk_size == 64  # still serving the old one
    old_counts = dict(Document.objects.values_list("original_filename", "chunk_count"))
    generation_promote(kb=kb, number=2)
    kb.refresh_from_db()
    assert (kb.active_generation.number, kb.chunk_size, kb.chunk_overlap) == (2, 32, 4)
    new_counts = dict(Document.objects.values_list("original_filename", "chunk_count"))
    assert all(new_counts[name] > old_counts[name] for name in old_counts)
    assert sum(new_counts.values()) == new.chunk_count == generation_store(new).vectors.count()


def test_uploads_during_a_rebuild_serve_at_once_and_are_taken_into_the_rebuild(kb) -> None:
    rebuild = generation_rebuild_start(kb=kb, enqueue=False)
    late = upload(kb, [("late.txt", text(15, "music"))]).job
    assert late.generation.number == 1  # uploads keep going to the active generation
    _run(late)
    late_doc = Document.objects.get(original_filename="late.txt")
    assert late_doc.pk in _doc_ids(kb.active_generation)
    done = _run(rebuild)
    assert done.documents_total == 4
    assert late_doc.pk in _doc_ids(done.generation)
    done.generation.refresh_from_db()
    assert done.generation.check_passed is True


def test_rolling_back_past_an_upload_requeues_it_so_nothing_is_lost(kb) -> None:
    _run(generation_rebuild_start(kb=kb, auto_promote=True, enqueue=False))
    new_doc = upload(kb, [("new.txt", text(12, "chess"))]).job
    _run(new_doc)
    doc = Document.objects.get(original_filename="new.txt")
    kb.refresh_from_db()
    assert kb.active_generation.number == 2 and doc.pk in _doc_ids(kb.active_generation)
    generation_rollback(kb=kb)
    doc.refresh_from_db()
    assert doc.status == Document.Status.PENDING  # generation 1 never had it
    catch_up = IngestionJob.objects.filter(status="queued", kind="ingest").get()
    assert catch_up.generation.number == 1 and list(catch_up.documents.all()) == [doc]
    _run(catch_up)
    doc.refresh_from_db()
    assert doc.status == Document.Status.INDEXED
    assert doc.pk in _doc_ids(Generation.objects.get(knowledge_base=kb, number=1))


def test_rebuild_conflicts_and_bad_settings(kb) -> None:
    with pytest.raises(ValidationError, match="at most 254 tokens"):
        generation_rebuild_start(kb=kb, chunk_size=1000, enqueue=False)
    assert not Generation.objects.filter(knowledge_base=kb, number=2).exists()
    generation_rebuild_start(kb=kb, enqueue=False)
    with pytest.raises(Conflict, match="already in progress"):
        generation_rebuild_start(kb=kb, enqueue=False)
    empty = make_kb(kb.owner, "empty")
    with pytest.raises(Conflict, match="no active generation"):
        generation_rebuild_start(kb=empty, enqueue=False)


def test_a_failed_rebuild_fails_its_generation_and_leaves_the_active_one(kb, monkeypatch) -> None:
    from knowledge_bases.generations import storage as build_storage

    def broken(spec: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("model missing")

    monkeypatch.setattr(build_storage, "embedder_get", broken)
    job = _run(generation_rebuild_start(kb=kb, auto_promote=True, enqueue=False))
    assert job.status == "failed"
    generation = job.generation
    generation.refresh_from_db()
    assert generation.status == S.FAILED and "model missing" in generation.error_message
    kb.refresh_from_db()
    assert kb.active_generation.number == 1
    with pytest.raises(Conflict, match="cannot be promoted: its build failed"):
        generation_promote(kb=kb, number=generation.number)

    # Retried once the model is back: the same generation builds, checks and is promoted.
    monkeypatch.undo()
    job = _run(ingestion_job_retry(job=job))
    generation.refresh_from_db()
    assert job.status == "succeeded" and generation.status == S.ACTIVE
    assert [e.to_status for e in generation.events.order_by("id")] == [
        "building",
        "failed",
        "building",
        "ready",
        "active",
    ]


def test_rebuild_from_the_cli_with_progress_and_from_the_api(kb) -> None:
    import io
    import json

    from django.core.management import call_command
    from django.test import Client

    from knowledge_bases.models import ApiToken

    out = io.StringIO()
    call_command("generations", "rb", "rebuild", "--promote", "--store-batch-size", "5", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert lines[0] == "rebuilding into generation 2"
    assert lines[-1].startswith("done: generation 2 active, ") and " reused, " in lines[-1]
    listed = io.StringIO()
    call_command("generations", "rb", "list", "--json", stdout=listed)
    assert [(g["number"], g["active"]) for g in json.loads(listed.getvalue())] == [
        (2, True),
        (1, False),
    ]

    _row, token = ApiToken.issue(user=kb.owner)
    client = Client(headers={"Authorization": f"Bearer {token}"})
    bad = client.post(
        "/api/kbs/rb/generations/rebuild", {"chunk_size": 3}, content_type="application/json"
    )
    assert bad.status_code == 422 and "chunk_size" in bad.json()["message"]
    started = client.post(
        "/api/kbs/rb/generations/rebuild",
        {"chunk_size": 48, "auto_promote": True},
        content_type="application/json",
    )
    assert started.status_code == 202 and started.json()["kind"] == "rebuild"
    assert started.json()["generation"] == 3
    again = client.post("/api/kbs/rb/generations/rebuild", {}, content_type="application/json")
    assert again.status_code == 409 and "already in progress" in again.json()["message"]


def test_a_promote_while_an_ingest_writes_to_the_active_generation_loses_nothing(kb) -> None:
    """Issue 10, case 1: the old job indexed its document into the generation that had just
    been archived and marked it indexed, and the follow-up job skipped it."""
    _run(generation_rebuild_start(kb=kb, chunk_size=32, chunk_overlap=4, enqueue=False))
    pending = upload(kb, [("during.txt", text(12, "glaciers"))]).job
    assert pending.generation.number == 1

    # The rule: no swap while a job still writes to the generation that would stop serving.
    with pytest.raises(Conflict, match=rf"job {pending.pk} .* into the active generation #1"):
        generation_promote(kb=kb, number=2)
    kb.refresh_from_db()
    assert kb.active_generation.number == 1

    _run(pending)
    generation_promote(kb=kb, number=2)
    for job in IngestionJob.objects.filter(status="queued"):
        _run(job)
    doc = Document.objects.get(original_filename="during.txt")
    kb.refresh_from_db()
    assert kb.active_generation.number == 2
    assert doc.status == Document.Status.INDEXED and doc.pk in _doc_ids(kb.active_generation)

    # Rollback follows the same rule.
    another = upload(kb, [("later.txt", text(12, "deserts"))]).job
    with pytest.raises(Conflict, match=rf"job {another.pk} .* into the active generation #2"):
        generation_rollback(kb=kb)
    _run(another)
    generation_rollback(kb=kb)
    for job in IngestionJob.objects.filter(status="queued"):
        _run(job)
    kb.refresh_from_db()
    assert kb.active_generation.number == 1
    present = _doc_ids(kb.active_generation)
    for document in Document.objects.filter(knowledge_base=kb):
        assert document.status == Document.Status.INDEXED and document.pk in present


def test_a_job_indexes_documents_absent_from_its_generation_whatever_their_status(kb) -> None:
    """A job selects documents by their presence in its target generation: a document
    marked indexed (by a job into another generation, say) but absent is indexed."""
    doc = Document.objects.get(original_filename="b.txt")
    store = generation_store(kb.active_generation)
    store.delete_documents([doc.pk])  # as if it had gone into another generation
    assert doc.status == Document.Status.INDEXED and doc.pk not in _doc_ids(kb.active_generation)
    job = _run(ingestion_job_create(kb=kb, documents=[doc], enqueue=False))
    assert job.status == "succeeded" and job.documents_done == 1
    assert doc.pk in _doc_ids(kb.active_generation)
    # Those present and indexed are not done again.
    again = _run(ingestion_job_create(kb=kb, documents=[doc], enqueue=False))
    assert (again.documents_done, again.embedded) == (1, 0)
    assert again.total == again.skipped == again.persisted == doc.chunk_count > 0


def test_an_auto_promote_refused_by_a_running_ingest_leaves_the_rebuild_ready(kb) -> None:
    """The rule holds for auto-promote too: the rebuild ends ready and checked, the upload
    still being indexed keeps the generation that serves, and nothing raises."""
    rebuild = generation_rebuild_start(kb=kb, auto_promote=True, enqueue=False)
    late = upload(kb, [("late.txt", text(10, "orchids"))]).job  # queued on generation 1
    done = _run(rebuild)
    assert done.status == "succeeded"
    generation = Generation.objects.get(knowledge_base=kb, number=2)
    assert generation.status == S.READY and generation.check_passed is True
    kb.refresh_from_db()
    assert kb.active_generation.number == 1
    _run(late)
    generation_promote(kb=kb, number=2)  # by hand, once the ingest has finished
    kb.refresh_from_db()
    assert kb.active_generation.number == 2
