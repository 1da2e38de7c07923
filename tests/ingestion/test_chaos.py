"""Integrity under crashes and concurrent lifecycle actions, with a real django-q2 cluster
(issue 10): what a user uploads ends up searchable exactly once, in the generation that
serves, whatever else happens at the same time.

Embeddings come from the OpenAI-compatible stand-in on 127.0.0.1 with a little latency per
request, so a job runs long enough to be killed several times while it works."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from ingestion.jobs import jobs_reap_stale, run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_store
from knowledge_bases.models import Document, KnowledgeBase
from knowledge_bases.services import (
    generation_promote,
    generation_rebuild_start,
    generation_rollback,
    generations_gc,
)
from ragstudio.core.errors import Conflict
from ragstudio.testing.embedding_server import EmbeddingServer, Reply
from tests.cluster import start_cluster, stop_cluster, wait_for
from tests.factories import make_kb, make_user, text, upload
from tests.helpers import scrape_metrics

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DIMS = 16


@pytest.fixture
def server(settings):  # type: ignore[no-untyped-def]
    with EmbeddingServer(dims=DIMS, keep_requests=False) as server:
        settings.RAGSTUDIO = {
            **settings.RAGSTUDIO,
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-local",
            "HEARTBEAT_STALE_SECONDS": 5,
            "JOB_MAX_ATTEMPTS": 20,
            "EMBEDDERS_FOR_USERS": ["local", "openai:*"],
        }
        yield server


def _cluster(tmp_path: Path, server: EmbeddingServer):  # type: ignore[no-untyped-def]
    return start_cluster(
        tmp_path,
        RAGSTUDIO_OPENAI_BASE_URL=server.url,
        RAGSTUDIO_OPENAI_API_KEY="sk-local",
        RAGSTUDIO_JOB_MAX_ATTEMPTS="20",
        # Two small requests in flight: long enough a job to kill it several times.
        RAGSTUDIO_OPENAI_MAX_CONCURRENCY="2",
        RAGSTUDIO_OPENAI_MAX_BATCH_ITEMS="4",
        RAGSTUDIO_EMBED_BATCH_SIZE="4",
    )


def _kb(user: Any, slug: str) -> KnowledgeBase:
    return make_kb(user, slug, embedder=f"openai:chaos@{DIMS}", chunk_size=48, chunk_overlap=4)


def _files(n: int, tag: str = "") -> list[tuple[str, bytes]]:
    return [(f"{tag}paper{i:03d}.txt", text(8 + i % 7, f"subject{i}{tag}")) for i in range(n)]


def _stores_hold_each_chunk_once(kb: KnowledgeBase) -> dict[str, int]:
    kb.refresh_from_db()
    store = generation_store(kb.active_generation)
    vector_ids, bm25_ids = store.vectors.ids(), store.bm25.ids()
    assert vector_ids == bm25_ids
    assert store.vectors.count() == store.bm25.count() == len(vector_ids)  # no id twice
    rows = store.vectors.rows(columns=["document_id"])
    names = dict(Document.objects.filter(knowledge_base=kb).values_list("pk", "original_filename"))
    per_file: dict[str, int] = {}
    for row in rows:
        name = names[row["document_id"]]
        per_file[name] = per_file.get(name, 0) + 1
    return per_file


def test_an_ingest_survives_its_cluster_being_killed_again_and_again(
    tmp_path: Path, server: EmbeddingServer, client_for
) -> None:
    user = make_user()
    files = _files(240)
    # The reference: a clean ingest of the same files, in this process.
    clean = _kb(user, "clean")
    run_job_and_queue(upload(clean, files, embed_batch_size=4).job.pk)
    expected = _stores_hold_each_chunk_once(clean)
    assert len(expected) == len(files)

    kb = _kb(user, "chaos")
    server.script.extend(Reply(delay=0.16) for _ in range(100_000))  # every request
    response = client_for(user).post(
        "/api/kbs/chaos/documents",
        {
            "files": [_upload(name, body) for name, body in files],
            "embed_batch_size": 4,
            "store_batch_size": 16,
        },
    )
    assert response.status_code == 202, response.content
    job_id = response.json()["job"]["id"]
    rng = random.Random(10)
    cluster = _cluster(tmp_path, server)
    kills: list[dict[str, float]] = []
    killed_at: float | None = None
    # What a Prometheus server scraping /metrics sees through the kills (issue 28).
    scrapes = [scrape_metrics()]
    try:
        for _ in range(6):
            scrapes.append(scrape_metrics())
            indexed_at_start = _indexed(kb)
            # Only once this cluster has made progress of its own.
            wait_for(lambda s=indexed_at_start: _indexed(kb) > s, 120, "progress after a start")
            if killed_at is not None:  # from the kill to the new cluster's first document
                kills[-1]["recovery_s"] = round(time.monotonic() - killed_at, 1)
            if IngestionJob.objects.get(pk=job_id).is_finished:
                break
            time.sleep(rng.uniform(0, 1.0))
            stop_cluster(cluster, kill=True)  # SIGKILL to every process of the cluster
            killed_at = time.monotonic()
            kills.append({"indexed_before": _indexed(kb)})
            cluster = _cluster(tmp_path, server)
            # The reaper (every minute in production) requeues it once its heartbeat is
            # stale; here the test plays the scheduler so the run stays short.
            wait_for(
                lambda: (
                    jobs_reap_stale()["requeued"] > 0
                    or IngestionJob.objects.get(pk=job_id).status != "running"
                ),
                60,
                "the dead worker's job to be requeued",
            )
        if kills and "recovery_s" not in kills[-1] and killed_at is not None:
            last = kills[-1]["indexed_before"]
            wait_for(
                lambda: _indexed(kb) > last or _indexed(kb) == len(files),
                120,
                "progress after the last kill",
            )
            kills[-1]["recovery_s"] = round(time.monotonic() - killed_at, 1)
        wait_for(lambda: IngestionJob.objects.get(pk=job_id).is_finished, 240, "the job to finish")
    finally:
        stop_cluster(cluster)
    assert len(kills) >= 5, kills
    scrapes.append(scrape_metrics())
    persisted = [m[("ragstudio_chunks_persisted_total", ())] for m in scrapes]
    assert persisted == sorted(persisted) and persisted[-1] > persisted[1], persisted
    assert scrapes[0][("ragstudio_queue_depth", ())] == 1  # the upload, before a worker
    last = scrapes[-1]
    assert last[("ragstudio_queue_depth", ())] == 0  # drained
    assert last.get(("ragstudio_jobs", (("kind", "ingest"), ("status", "running"))), 0) == 0
    assert last[("ragstudio_jobs", (("kind", "ingest"), ("status", "succeeded")))] == 2

    job = IngestionJob.objects.get(pk=job_id)
    assert job.status == "succeeded", job.error_message
    assert set(Document.objects.filter(knowledge_base=kb).values_list("status", flat=True)) == {
        "indexed"
    }
    stored = _stores_hold_each_chunk_once(kb)
    assert stored == expected  # the same chunks as the clean ingest, file by file
    total = sum(expected.values())
    assert job.total == job.persisted == total
    assert job.embedded + job.skipped == total
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "chaos.json").write_text(
        json.dumps(
            {
                "documents": len(files),
                "chunks": total,
                "kills": kills,
                "lost": len(expected) - len(stored),
                "duplicated": 0,
                "job": {"attempts": job.attempts, "embedded": job.embedded, "reused": job.skipped},
            },
            indent=2,
        )
    )


def _upload(name: str, body: bytes):  # type: ignore[no-untyped-def]
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, body, content_type="text/plain")


def _indexed(kb: KnowledgeBase) -> int:
    return Document.objects.filter(knowledge_base=kb, status=Document.Status.INDEXED).count()


def test_swaps_and_gc_hammered_during_ingests_never_leave_a_document_behind(
    tmp_path: Path, server: EmbeddingServer
) -> None:
    user = make_user()
    kb = _kb(user, "hammer")
    run_job_and_queue(upload(kb, _files(20)).job.pk)
    run_job_and_queue(generation_rebuild_start(kb=kb, chunk_size=32, enqueue=False).pk)
    kb.refresh_from_db()
    assert kb.active_generation.number == 1
    server.script.extend(Reply(delay=0.02) for _ in range(100_000))
    cluster = _cluster(tmp_path, server)
    stop = threading.Event()
    outcomes: dict[str, int] = {}

    def hammer() -> None:
        actions = [
            lambda: generation_promote(kb=kb, number=2),
            lambda: generation_promote(kb=kb, number=1),
            lambda: generation_rollback(kb=kb),
            lambda: generations_gc(kb=kb),
        ]
        rng = random.Random(3)
        try:
            while not stop.is_set():
                try:
                    rng.choice(actions)()
                    outcomes["done"] = outcomes.get("done", 0) + 1
                except Conflict:
                    outcomes["refused"] = outcomes.get("refused", 0) + 1
                time.sleep(0.05)
        finally:
            connection.close()

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for batch in range(4):
            upload(
                kb, _files(15, f"b{batch}-"), enqueue=True, embed_batch_size=4, store_batch_size=16
            )
            time.sleep(1.0)  # uploads arrive while swaps are tried
        wait_for(
            lambda: not IngestionJob.objects.filter(status__in=IngestionJob.LIVE).exists(),
            240,
            "every job to finish",
        )
    finally:
        stop.set()
        thread.join(timeout=60)
        stop_cluster(cluster)
    # Swaps requeue what the new generation lacks; let those follow-ups run too.
    for job in IngestionJob.objects.filter(status="queued"):
        run_job_and_queue(job.pk)
    assert outcomes.get("done", 0) > 0 and outcomes.get("refused", 0) > 0, outcomes
    kb.refresh_from_db()
    present = {
        r["document_id"]
        for r in generation_store(kb.active_generation).vectors.rows(columns=["document_id"])
    }
    documents = list(Document.objects.filter(knowledge_base=kb))
    assert len(documents) == 20 + 4 * 15
    indexed_but_absent = [
        d.original_filename for d in documents if d.status == "indexed" and d.pk not in present
    ]
    assert indexed_but_absent == []
    assert {d.status for d in documents} == {"indexed"}  # nothing waits for an upload
    _stores_hold_each_chunk_once(kb)
