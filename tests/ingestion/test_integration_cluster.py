"""A real django-q2 cluster (`manage.py qcluster` in its own process, ORM broker) runs
uploads against real LanceDB/tantivy directories with the real bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_store
from knowledge_bases.models import Document
from tests.cluster import start_cluster as _start
from tests.cluster import stop_cluster as _stop
from tests.cluster import wait_for as _wait_for
from tests.factories import make_kb, make_user, text, upload
from tests.helpers import scrape_metrics

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    proc = _start(tmp_path)
    yield proc
    _stop(proc)


def test_a_worker_cluster_ingests_uploads_end_to_end(cluster, tmp_path: Path) -> None:
    kb = make_kb(make_user(), "live")
    first = upload(kb, [(f"a{i}.txt", text(30, f"alpha{i}")) for i in range(5)], enqueue=True).job
    # A second upload queued at once: both target generation 1 and must run one after the other.
    second = upload(kb, [("b.txt", text(30, "beta")), ("bad.gif", b"GIF89a....")], enqueue=True).job

    def finished() -> bool:
        assert cluster.poll() is None, (tmp_path / "qcluster.log").read_text()
        return all(j.is_finished for j in IngestionJob.objects.filter(pk__in=[first.pk, second.pk]))

    _wait_for(finished, 180, "both jobs to finish")
    jobs = {j.pk: j for j in IngestionJob.objects.filter(pk__in=[first.pk, second.pk])}
    for job in jobs.values():
        assert job.status == IngestionJob.Status.SUCCEEDED, job.error_message
        assert job.total == job.embedded + job.skipped == job.persisted > 0
        assert job.worker and job.attempts == 1
    # Never two writers on one generation: the second started after the first finished.
    assert jobs[second.pk].started_at >= jobs[first.pk].finished_at
    kb.refresh_from_db()
    store = generation_store(kb.active_generation)
    indexed = Document.objects.filter(knowledge_base=kb, status=Document.Status.INDEXED)
    assert indexed.count() == 6
    assert store.vectors.count() == store.bm25.count() == sum(d.chunk_count for d in indexed)


def test_a_job_whose_worker_dies_is_requeued_and_finishes_without_duplicates(
    tmp_path, settings
) -> None:
    from ingestion.jobs import jobs_reap_stale

    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "HEARTBEAT_STALE_SECONDS": 5}
    kb = make_kb(make_user(), "crash")
    files = [(f"d{i}.txt", text(40, f"subject{i}")) for i in range(80)]
    job = upload(kb, files, enqueue=True, store_batch_size=20).job
    first = _start(tmp_path, "first")
    try:

        def some_rows_persisted() -> bool:
            row = IngestionJob.objects.get(pk=job.pk)
            assert not row.is_finished, "finished before the worker could be killed"
            return row.persisted > 0

        _wait_for(some_rows_persisted, 120, "the first rows to be persisted")
    finally:
        _stop(first, kill=True)  # the whole cluster dies mid-job, without cleaning up
    crashed = IngestionJob.objects.get(pk=job.pk)
    assert crashed.status == IngestionJob.Status.RUNNING and 0 < crashed.persisted < crashed.total

    # Nothing heartbeats any more: the reaper (a django-q2 schedule) requeues it.
    _wait_for(lambda: jobs_reap_stale()["requeued"] == 1, 30, "the stale job to be requeued")
    second = _start(tmp_path, "second")
    try:
        _wait_for(lambda: IngestionJob.objects.get(pk=job.pk).is_finished, 180, "the job to finish")
    finally:
        _stop(second)
    done = IngestionJob.objects.get(pk=job.pk)
    assert done.status == IngestionJob.Status.SUCCEEDED and done.attempts == 2
    assert done.skipped > 0  # what the dead worker had persisted was reused, not recomputed
    kb.refresh_from_db()
    store = generation_store(kb.active_generation)
    expected = sum(Document.objects.filter(knowledge_base=kb).values_list("chunk_count", flat=True))
    ids = store.vectors.ids()
    assert len(ids) == store.vectors.count() == store.bm25.count() == expected
    assert ids == store.bm25.ids()
    assert Document.objects.filter(status=Document.Status.INDEXED).count() == 80


def test_metrics_show_the_queue_draining_and_the_worker_s_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28: /metrics while a real worker drains the queue: the database's gauges (queue
    depth, jobs by status, chunks) and the worker process's own count of jobs ended, which
    reaches /metrics through the processes' shared metrics directory."""
    scrape = scrape_metrics
    kb = make_kb(make_user(), "drain")
    jobs = [upload(kb, [(f"{n}.txt", text(20, f"topic{n}"))], enqueue=True).job for n in range(3)]
    queued = scrape()
    assert queued[("ragstudio_queue_depth", ())] == 3
    assert queued[("ragstudio_jobs", (("kind", "ingest"), ("status", "queued")))] == 3
    shared = tmp_path / "metrics"
    shared.mkdir()
    proc = _start(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(shared))
    try:
        _wait_for(
            lambda: all(
                j.is_finished for j in IngestionJob.objects.filter(pk__in=[j.pk for j in jobs])
            ),
            180,
            "the queue to drain",
        )
    finally:
        _stop(proc)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    drained = scrape()
    assert drained[("ragstudio_queue_depth", ())] == 0
    assert drained[("ragstudio_jobs", (("kind", "ingest"), ("status", "succeeded")))] == 3
    persisted = sum(IngestionJob.objects.values_list("persisted", flat=True))
    assert drained[("ragstudio_chunks_persisted_total", ())] == persisted > 0
    ended = ("ragstudio_jobs_ended_total", (("kind", "ingest"), ("status", "succeeded")))
    assert drained[ended] == 3
