"""Running jobs for real: the bundled model, LanceDB and tantivy under tmp_path, and the
progress reporter thread writing to the (file-based) test database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from ingestion.jobs import job_claim, job_execute, jobs_reap_stale, run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_store
from knowledge_bases.models import Document, Generation
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def kb():  # type: ignore[no-untyped-def]
    return make_kb(make_user())


def _run(job_id: int) -> IngestionJob:
    run_job_and_queue(job_id)
    return IngestionJob.objects.get(pk=job_id)


def test_a_job_indexes_its_documents_and_activates_the_first_generation(kb) -> None:
    result = upload(kb, [("a.txt", text(30)), ("b.txt", text(25, "art")), ("c.gif", b"GIF89a..")])
    job = _run(result.job.pk)
    assert job.status == IngestionJob.Status.SUCCEEDED
    assert job.total > 0 and job.total == job.embedded == job.persisted
    assert job.buffered == 0 and job.documents_done == 2 and job.documents_failed == 0
    assert job.heartbeat_at is not None and job.finished_at is not None
    docs = {d.original_filename: d for d in Document.objects.filter(knowledge_base=kb)}
    assert {d.status for d in docs.values()} == {Document.Status.INDEXED}
    assert docs["a.txt"].chunk_count + docs["b.txt"].chunk_count == job.total
    kb.refresh_from_db()
    generation = kb.active_generation
    assert generation.number == 1 and generation.status == Generation.Status.ACTIVE
    assert generation.chunk_count == job.total
    assert generation.embedder_fingerprint.startswith("local-fast:all-MiniLM-L6-v2")
    store = generation_store(generation)
    assert store.vectors.count() == store.bm25.count() == job.total
    assert [e.to_status for e in generation.events.order_by("id")] == ["building", "active"]


def test_later_uploads_go_into_the_active_generation(kb) -> None:
    _run(upload(kb, [("a.txt", text(10))]).job.pk)
    second = upload(kb, [("b.txt", text(12, "music"))]).job
    assert second.generation.number == 1
    job = _run(second.pk)
    store = generation_store(job.generation)
    chunk_counts = Document.objects.filter(knowledge_base=kb).values_list("chunk_count", flat=True)
    assert store.vectors.count() == sum(chunk_counts) > 0
    assert Generation.objects.filter(knowledge_base=kb).count() == 1


def test_a_document_that_fails_to_parse_is_marked_and_the_job_succeeds(kb) -> None:
    from tests.helpers import make_pdf

    result = upload(kb, [("ok.txt", text(8)), ("scan.pdf", make_pdf([""]))])
    job = _run(result.job.pk)
    assert job.status == IngestionJob.Status.SUCCEEDED
    assert (job.documents_done, job.documents_failed) == (1, 1)
    failed = Document.objects.get(original_filename="scan.pdf")
    assert failed.status == Document.Status.FAILED and "no text layer" in failed.error_message
    # The job says which document failed and why, once (not one line per report).
    assert len(job.failures) == 1 and job.total_known
    assert job.failures[0]["document_id"] == failed.pk
    assert job.failures[0]["name"] == "scan.pdf" and "no text layer" in job.failures[0]["error"]


def test_the_job_page_and_api_name_each_failed_document_and_say_when_the_total_is_counted(
    kb, client_for, login
) -> None:
    from tests.helpers import make_pdf

    result = upload(kb, [("ok.txt", text(8)), ("scan.pdf", make_pdf([""]))])
    client = login(kb.owner)
    queued = client.get(f"/jobs/{result.job.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert 'data-testid="counting"' in queued and "counting…" in queued
    assert "aria-valuenow" not in queued  # no bar claims a share of a total still growing
    job = _run(result.job.pk)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'data-testid="counting"' not in page and 'data-testid="job-failures"' in page
    assert "scan.pdf</a>: <span" in page and "no text layer" in page
    body = client_for(kb.owner).get(f"/api/jobs/{job.pk}").json()
    assert body["total_known"] is True
    assert [(f["name"], "no text layer" in f["error"]) for f in body["failures"]] == [
        ("scan.pdf", True)
    ]


def test_running_the_same_job_twice_leaves_the_same_rows(kb) -> None:
    job = _run(upload(kb, [("a.txt", text(20)), ("b.txt", text(20, "law"))]).job.pk)
    store = generation_store(job.generation)
    before = sorted(r["id"] for r in store.vectors.rows(columns=["id"]))
    # Delivered again (at-least-once): the claim refuses a finished job...
    assert job_claim(job_id=job.pk) is None
    # ...and even forced to run again from scratch it writes the same rows.
    Document.objects.update(status=Document.Status.PENDING, chunk_count=0)
    IngestionJob.objects.filter(pk=job.pk).update(status=IngestionJob.Status.QUEUED)
    again = _run(job.pk)
    after = sorted(r["id"] for r in generation_store(job.generation).vectors.rows(columns=["id"]))
    assert before == after and len(after) == job.total
    assert again.skipped == job.total and again.embedded == 0
    assert generation_store(job.generation).bm25.count() == len(after)


def test_only_one_job_writes_to_a_generation_at_a_time(kb) -> None:
    first = upload(kb, [("a.txt", text(5))]).job
    second = upload(kb, [("b.txt", text(6))]).job
    claimed = job_claim(job_id=first.pk, worker="w1")
    assert claimed is not None
    assert job_claim(job_id=second.pk, worker="w2") is None  # generation busy
    assert job_claim(job_id=first.pk, worker="w2") is None  # running with a live heartbeat
    job_execute(claimed)
    # The worker that finished the first job drains the queue behind it.
    assert run_job_and_queue(second.pk) == [second.pk]
    assert IngestionJob.objects.get(pk=second.pk).status == IngestionJob.Status.SUCCEEDED


def test_a_worker_that_finishes_runs_the_jobs_queued_behind_it(kb) -> None:
    first = upload(kb, [("a.txt", text(5))]).job
    second = upload(kb, [("b.txt", text(6))]).job
    assert run_job_and_queue(first.pk) == [first.pk, second.pk]
    assert set(IngestionJob.objects.values_list("status", flat=True)) == {"succeeded"}


def test_a_job_whose_heartbeat_stopped_is_taken_over(kb, settings) -> None:
    job = upload(kb, [("a.txt", text(5))]).job
    assert job_claim(job_id=job.pk, worker="dead-worker") is not None
    stale = timezone.now() - timedelta(seconds=settings.RAGSTUDIO["HEARTBEAT_STALE_SECONDS"] + 5)
    IngestionJob.objects.filter(pk=job.pk).update(heartbeat_at=stale)
    taken = job_claim(job_id=job.pk, worker="w2")
    assert taken is not None and taken.worker == "w2" and taken.attempts == 2
    job_execute(taken)
    assert IngestionJob.objects.get(pk=job.pk).status == IngestionJob.Status.SUCCEEDED


def test_the_reaper_requeues_stale_jobs_then_fails_them_after_max_attempts(kb, settings) -> None:
    job = upload(kb, [("a.txt", text(5))]).job
    stale = timezone.now() - timedelta(seconds=settings.RAGSTUDIO["HEARTBEAT_STALE_SECONDS"] + 5)
    IngestionJob.objects.filter(pk=job.pk).update(
        status=IngestionJob.Status.RUNNING, heartbeat_at=stale, attempts=1
    )
    assert jobs_reap_stale()["requeued"] == 1
    assert IngestionJob.objects.get(pk=job.pk).status == IngestionJob.Status.QUEUED
    IngestionJob.objects.filter(pk=job.pk).update(
        status=IngestionJob.Status.RUNNING,
        heartbeat_at=stale,
        attempts=settings.RAGSTUDIO["JOB_MAX_ATTEMPTS"],
    )
    assert jobs_reap_stale()["failed"] == 1
    failed = IngestionJob.objects.get(pk=job.pk)
    assert failed.status == IngestionJob.Status.FAILED
    assert "stopped responding" in failed.error_message


class HoldsAfterItsFirstBatch:
    """The real embedder; once its first batch (or streamed group, local-fast's pipeline
    path) is done, ``hold`` runs (it waits, bounded, on what the test needs to see) before
    the next one, so a check holds however fast or slow the model embeds."""

    def __init__(self, inner: Any, hold: Callable[[], object]) -> None:
        self._inner = inner
        self._hold = hold
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_batch(self, texts: Any, **kwargs: Any) -> Any:
        self.batches += 1
        if self.batches > 1:
            self._hold()
        return self._inner.embed_batch(texts, **kwargs)

    def embed_stream(self, items: Any, **kwargs: Any) -> Iterator[Any]:
        for i, group in enumerate(self._inner.embed_stream(items, **kwargs)):
            if i:
                self._hold()
            yield group


def test_a_cancel_request_stops_a_running_job_and_keeps_what_was_embedded(kb, monkeypatch) -> None:
    from ingestion.embedders.local import FastLocalEmbedder
    from knowledge_bases.generations import storage as build_storage

    files = [(f"d{i}.txt", text(40, f"topic{i}")) for i in range(60)]
    job = upload(kb, files, store_batch_size=2).job
    monkeypatch.setattr(FastLocalEmbedder, "stream_group", 32)  # several groups
    cancel = threading.Event()
    real_embedder_get = build_storage.embedder_get

    def request_cancel_and_wait() -> None:
        """After the first batch: ask, as the page does (the row's flag), and wait until
        the job's reporter has relayed it (bounded)."""
        IngestionJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        cancel.wait(timeout=30)

    monkeypatch.setattr(
        build_storage,
        "embedder_get",
        lambda spec: HoldsAfterItsFirstBatch(real_embedder_get(spec), request_cancel_and_wait),
    )
    done = job_execute(job_claim(job_id=job.pk), cancel=cancel)
    assert cancel.is_set(), "the reporter never relayed the row's cancel request"
    assert done.status == IngestionJob.Status.CANCELLED
    assert 0 < done.persisted < done.total
    assert generation_store(done.generation).vectors.count() == done.persisted
    assert Document.objects.filter(status=Document.Status.PENDING).exists()


def test_counters_reach_the_job_row_while_it_runs(kb, monkeypatch) -> None:
    from knowledge_bases.generations import storage as build_storage

    files = [(f"d{i}.txt", text(40, f"t{i}")) for i in range(60)]  # several batches
    job = upload(kb, files, store_batch_size=10_000).job
    snapshots: list[tuple[int, int, int]] = []
    buffered_on_the_row = threading.Event()
    real_embedder_get = build_storage.embedder_get

    monkeypatch.setattr(
        build_storage,
        "embedder_get",
        lambda spec: HoldsAfterItsFirstBatch(
            real_embedder_get(spec), lambda: buffered_on_the_row.wait(timeout=30)
        ),
    )

    def on_progress(current: IngestionJob, _snapshot: object) -> None:
        row = IngestionJob.objects.get(pk=job.pk)  # what another process would read
        snapshots.append((row.ready, row.persisted, row.buffered))
        if row.ready > 0 and row.persisted == 0 and row.buffered == row.ready:
            buffered_on_the_row.set()

    job_execute(job_claim(job_id=job.pk), on_progress=on_progress)
    final = IngestionJob.objects.get(pk=job.pk)
    assert snapshots, "the reporter never wrote while the job ran"
    # With one 10,000-row flush at the end, rows sat in the buffer while embedding went on.
    assert any(
        ready > 0 and persisted == 0 and buffered == ready
        for ready, persisted, buffered in snapshots
    ), snapshots
    assert (final.persisted, final.buffered) == (final.total, 0)


def test_a_broken_embedder_fails_the_job_with_its_reason(kb, monkeypatch) -> None:
    from knowledge_bases.generations import storage as build_storage

    def broken(spec: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("model file is corrupt")

    monkeypatch.setattr(build_storage, "embedder_get", broken)
    job = _run(upload(kb, [("a.txt", text(5))]).job.pk)
    assert job.status == IngestionJob.Status.FAILED
    assert job.error_message == "model file is corrupt"
    assert Document.objects.get().status == Document.Status.PENDING
    kb.refresh_from_db()
    assert kb.active_generation is None


@pytest.mark.slow
def test_a_worker_whose_job_was_taken_over_stops_and_leaves_the_row_alone(kb) -> None:
    files = [(f"d{i}.txt", text(40, f"topic{i}")) for i in range(60)]
    job = upload(kb, files, store_batch_size=2).job
    claimed = job_claim(job_id=job.pk, worker="slow-worker")

    def taken_over(current: IngestionJob, _snapshot: object) -> None:
        IngestionJob.objects.filter(pk=job.pk).update(worker="other-worker", attempts=2)

    job_execute(claimed, on_progress=taken_over)
    row = IngestionJob.objects.get(pk=job.pk)
    assert (row.status, row.worker, row.finished_at) == ("running", "other-worker", None)
    assert row.persisted < row.total  # it stopped instead of finishing someone else's job


def test_a_job_through_an_openai_compatible_api_counts_its_retries(kb, settings, login) -> None:
    """The whole job against a real HTTP server on 127.0.0.1 that rate-limits and fails."""
    from ingestion.embedders import get_embedder
    from ingestion.foreground import progress_line
    from ingestion.schemas import JobOut
    from knowledge_bases.services import knowledge_base_create
    from ragstudio.testing.embedding_server import EmbeddingServer, Reply

    client = login(make_user("root", is_staff=True))
    with EmbeddingServer(dims=16) as server:
        settings.RAGSTUDIO = {
            **settings.RAGSTUDIO,
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-local",
        }
        get_embedder.cache_clear()
        api_kb = knowledge_base_create(
            slug="remote",
            name="Remote",
            embedder="openai:test-embed@16",
            chunk_size=64,
            chunk_overlap=8,
        )
        assert api_kb.embedding_dimensions == 16
        server.script.extend([Reply(429, {"Retry-After": "0"}), Reply(503, {"Retry-After": "0"})])
        job = _run(upload(api_kb, [("a.txt", text(20)), ("b.txt", text(20, "art"))]).job.pk)
        get_embedder.cache_clear()
    assert job.status == IngestionJob.Status.SUCCEEDED, job.error_message
    assert job.retries == 2
    assert job.total == job.embedded == job.persisted > 0
    assert generation_store(job.generation).vectors.count() == job.total
    assert all(len(r["input"]) <= 256 for r in server.requests)
    # The throttle reached the job row, the API, the CLI line and the page (issue 13).
    assert job.embedding["throttle_events"] == 1 and job.embedding["retries"] == 2
    assert job.embedding["note"] == "paused 0.0 s after 429"  # Retry-After: 0
    assert JobOut.from_orm(job).dict()["embedding"]["concurrency"] >= 1
    assert "1 throttle events (paused 0.0 s after 429)" in progress_line(job)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "paused 0.0 s after 429" in page


def test_the_reaper_gives_tasks_only_to_queued_jobs_that_can_run(kb, settings) -> None:
    from django_q.brokers import get_broker

    broker = get_broker()  # the ORM's table, or Redis in the scale-out run
    broker.purge_queue()
    waiting = upload(kb, [("a.txt", text(5))]).job
    old = timezone.now() - timedelta(minutes=5)
    IngestionJob.objects.filter(pk=waiting.pk).update(created_at=old)
    assert jobs_reap_stale()["enqueued"] == 1  # a lost task: enqueued again
    running = job_claim(job_id=waiting.pk)
    behind = upload(kb, [("b.txt", text(6))]).job
    IngestionJob.objects.filter(pk=behind.pk).update(created_at=old)
    assert running is not None
    # The generation is busy with a live job: that worker drains the queue, no new task.
    assert jobs_reap_stale()["enqueued"] == 0
    assert broker.queue_size() == 1


def test_a_job_waiting_behind_a_long_one_is_not_given_a_task_every_minute(kb) -> None:
    """Issue 25, case 9: behind a long job the reaper gave every waiting job a new task each
    minute (one job was delivered four times). While a job runs or a task waits in the
    broker, no task is added; when both are gone (a broker restart lost them), it is."""
    from django_q.brokers import get_broker

    broker = get_broker()
    broker.purge_queue()
    long_job = upload(kb, [("a.txt", text(5))]).job
    assert job_claim(job_id=long_job.pk) is not None  # running, heartbeat fresh
    other = make_kb(kb.owner, "other")
    waiting = upload(other, [("b.txt", text(6))], enqueue=True).job  # its task waits
    IngestionJob.objects.filter(pk=waiting.pk).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )
    assert broker.queue_size() == 1
    for _minute in range(3):
        assert jobs_reap_stale()["enqueued"] == 0
    assert broker.queue_size() == 1
    # The long job ends and the broker loses its tasks: the waiting job gets one again.
    IngestionJob.objects.filter(pk=long_job.pk).update(status=IngestionJob.Status.SUCCEEDED)
    broker.purge_queue()
    assert jobs_reap_stale()["enqueued"] == 1
    assert broker.queue_size() == 1


def _crash_mid_job(job: IngestionJob) -> None:
    """What a worker killed after its last flush but before its last report leaves: rows
    in the stores, the documents still pending, the job running with a dead heartbeat."""
    job.documents.update(status=Document.Status.PENDING, chunk_count=0)
    IngestionJob.objects.filter(pk=job.pk).update(
        status=IngestionJob.Status.RUNNING,
        worker="dead-worker",
        heartbeat_at=timezone.now() - timedelta(hours=1),
        finished_at=None,
    )


def test_a_resumed_job_with_repeated_text_stores_each_chunk_once(kb) -> None:
    """Issue 10, case 2: a content hash repeated many times must not crowd the others out
    of the vector-cache lookup (they were appended again: 11 ids twice in both stores)."""
    import json

    records = [{"id": f"same{i}", "text": "The same sentence again."} for i in range(200)]
    records += [
        {"id": f"own{i}", "text": f"Distinct record {i} about {i * 7} rivers."} for i in range(11)
    ]
    body = "\n".join(json.dumps(r) for r in records).encode()
    job = _run(upload(kb, [("repeats.jsonl", body)]).job.pk)
    assert job.status == IngestionJob.Status.SUCCEEDED and job.total == 211
    store = generation_store(job.generation)
    first_ids = store.vectors.ids()

    _crash_mid_job(job)
    assert jobs_reap_stale()["requeued"] == 1
    job = _run(job.pk)

    assert job.status == IngestionJob.Status.SUCCEEDED, job.error_message
    assert store.vectors.ids() == store.bm25.ids() == first_ids
    assert store.vectors.count() == store.bm25.count() == len(first_ids) == 211
    # Nothing was embedded again: every vector came from the target itself.
    assert job.skipped == 211


def test_a_resumed_job_counts_the_whole_job_across_attempts(kb) -> None:
    """Issue 10, case 3: after a takeover the counters described the last attempt only
    (total 836 of 1,359 chunks, embedded 403, persisted 836, skipped 433)."""
    files = [(f"d{i}.txt", text(20, f"topic{i}")) for i in range(6)]
    job = _run(upload(kb, files).job.pk)
    total = job.total
    assert job.status == "succeeded" and total == job.embedded == job.persisted > 0

    # The worker died when half the documents had been reported done.
    _crash_mid_job(job)
    rows = generation_store(job.generation).vectors.rows(columns=["document_id"])
    per_doc = {
        d: sum(1 for r in rows if r["document_id"] == d) for d in {r["document_id"] for r in rows}
    }
    done = list(job.documents.order_by("pk")[:3])
    for doc in done:
        Document.objects.filter(pk=doc.pk).update(
            status=Document.Status.INDEXED, chunk_count=per_doc[doc.pk]
        )
    redo = total - sum(per_doc[d.pk] for d in done)
    assert jobs_reap_stale()["requeued"] == 1
    job = _run(job.pk)

    assert job.status == "succeeded" and job.attempts == 2
    assert job.total == job.persisted == total == generation_store(job.generation).vectors.count()
    # The redone documents' vectors were stored already: reused, not embedded again.
    assert (job.embedded, job.skipped) == (total - redo, redo)
    assert (job.documents_done, job.documents_failed, job.documents_total) == (6, 0, 6)


def test_a_failed_job_is_retried_from_the_api_page_and_admin_reusing_what_it_wrote(
    kb, monkeypatch, client_for, login
) -> None:
    """Issue 10, case 5: a job that failed (disk full, a LanceDB error) was never retried;
    its documents waited for an unrelated upload."""
    from knowledge_bases.generations import storage as build_storage

    # Documents of 5+ chunks: the 4 rows written before the disk fills are part of a
    # document, which the retry must run again, reusing those rows' vectors.
    files = [(f"d{i}.txt", text(30, f"topic{i}")) for i in range(4)]
    job = upload(kb, files, store_batch_size=2).job
    real_write = build_storage.GenerationStore.write
    calls = {"n": 0}

    def disk_full_after_two_writes(self, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(28, "No space left on device")
        return real_write(self, rows)

    monkeypatch.setattr(build_storage.GenerationStore, "write", disk_full_after_two_writes)
    job = _run(job.pk)
    assert job.status == "failed" and "No space left on device" in job.error_message
    written = generation_store(job.generation).vectors.count()
    assert written == 4  # two writes of two rows: partial rows stay, the retry reuses them
    monkeypatch.undo()

    owner = kb.owner
    api = client_for(owner)
    retried = api.post(f"/api/jobs/{job.pk}/retry")
    assert retried.status_code == 202, retried.content
    assert retried.json()["status"] == "queued" and retried.json()["attempts"] == 0
    again = api.post(f"/api/jobs/{job.pk}/retry")
    assert again.status_code == 409 and "is queued" in again.json()["message"]

    job = _run(job.pk)
    assert job.status == "succeeded", job.error_message
    store = generation_store(job.generation)
    assert job.total == job.persisted == store.vectors.count() == store.bm25.count()
    assert job.skipped >= written  # the rows the failed attempt wrote were reused
    assert set(Document.objects.filter(knowledge_base=kb).values_list("status", flat=True)) == {
        "indexed"
    }

    # The page's button and the admin action reach the same service.
    job.status = "failed"
    job.save(update_fields=["status"])
    page = login(owner).get(f"/jobs/{job.pk}/").content.decode()
    assert 'data-testid="retry"' in page
    response = login(owner).post(f"/jobs/{job.pk}/retry/")
    assert response.status_code == 302
    assert IngestionJob.objects.get(pk=job.pk).status == "queued"
    IngestionJob.objects.filter(pk=job.pk).update(status="failed")
    staff = make_user("root", is_staff=True, is_superuser=True)
    login(staff).post(
        "/admin/ingestion/ingestionjob/",
        {"action": "retry", "_selected_action": [job.pk]},
    )
    assert IngestionJob.objects.get(pk=job.pk).status == "queued"
