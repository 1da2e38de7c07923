"""The hostile corpus (tests/data/hostile/generate.py) uploaded through the API of a running
server, with a real worker cluster (issue 11): each file gets its clear verdict, the web
process keeps answering other requests meanwhile, the worker finishes the rest of the job,
and nothing else in the knowledge base changes."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_store
from knowledge_bases.models import ApiToken, Document
from ragstudio.testing.embedding_server import EmbeddingServer
from tests.cluster import free_port, start_cluster, stop_cluster, wait_for, wait_for_http
from tests.factories import make_kb, make_user, text, upload
from tests.helpers import subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def _corpus() -> list[tuple[str, bytes, tuple[str, str | None]]]:
    spec = importlib.util.spec_from_file_location(
        "hostile", ROOT / "tests" / "data" / "hostile" / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.corpus()


def _stored_name(name: str) -> str:
    """What the upload keeps of a file name: its last part, at most 255 characters with
    the extension kept (Django's UploadedFile shortens it so)."""
    base = Path(name.replace("\\", "/")).name
    if len(base) > 255:
        stem, ext = os.path.splitext(base)
        base = stem[: 255 - len(ext)] + ext
    return base


def test_the_hostile_corpus_gets_clear_verdicts_and_freezes_nothing(tmp_path, settings) -> None:
    corpus = _corpus()
    with EmbeddingServer(dims=16, keep_requests=False) as embeddings:
        settings.RAGSTUDIO = {
            **settings.RAGSTUDIO,
            "OPENAI_BASE_URL": embeddings.url,
            "OPENAI_API_KEY": "sk-local",
        }
        user = make_user("mallory")
        kb = make_kb(None, "hostile", embedder="openai:hostile@16")
        kb.owner = user
        kb.save(update_fields=["owner"])
        bystander = upload(kb, [("bystander.txt", text(30, "glaciers"))]).job
        run_job_and_queue(bystander.pk)
        kb.refresh_from_db()
        store = generation_store(kb.active_generation)
        before = store.vectors.ids()
        _row, token = ApiToken.issue(user=user)
        auth = {"Authorization": f"Bearer {token}"}
        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT,
            env=subprocess_env(tmp_path / "data"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cluster = start_cluster(
            tmp_path,
            RAGSTUDIO_OPENAI_BASE_URL=embeddings.url,
            RAGSTUDIO_OPENAI_API_KEY="sk-local",
            RAGSTUDIO_PARSE_TIMEOUT_SECONDS="3",
        )
        base = f"http://127.0.0.1:{port}"
        latencies: list[float] = []
        stop = threading.Event()

        def probe() -> None:  # another user of the same web process, all along
            while not stop.is_set():
                started = time.perf_counter()
                response = requests.get(f"{base}/api/kbs", headers=auth, timeout=30)
                assert response.status_code == 200
                latencies.append(time.perf_counter() - started)
                stop.wait(0.05)

        try:
            wait_for_http(f"{base}/api/kbs", headers=auth)
            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            rejected: dict[str, str] = {}
            job_ids = []
            for name, content, (verdict, reason) in corpus:  # each in a request of its own
                response = requests.post(
                    f"{base}/api/kbs/hostile/documents",
                    headers=auth,
                    files=[("files", (name, content, "application/octet-stream"))],
                    timeout=300,
                )
                assert response.headers["Content-Type"].startswith("application/json"), name
                if verdict == "refused":  # the whole request: JSON, not Django's HTML page
                    assert response.status_code == 400, response.text[:300]
                    assert reason in response.json()["message"]
                    continue
                body = response.json()
                if verdict == "rejected":
                    assert response.status_code == 422, (name, response.text[:300])
                    rejected.update((r["filename"], r["reason"]) for r in body["extra"]["rejected"])
                else:
                    assert response.status_code == 202, (name, response.text[:300])
                    job_ids.append(body["job"]["id"])
            wait_for(
                lambda: all(j.is_finished for j in IngestionJob.objects.filter(pk__in=job_ids)),
                240,
                "the jobs to end",
            )
        finally:
            stop.set()
            stop_cluster(cluster)
            web.terminate()
            web.wait(timeout=30)

    documents = {d.original_filename: d for d in Document.objects.filter(knowledge_base=kb)}
    for name, _content, (verdict, reason) in corpus:
        stored = _stored_name(name)
        if verdict == "refused":
            assert stored not in documents
        elif verdict == "rejected":
            assert reason in rejected[stored], (name, rejected.get(stored))
            assert stored not in documents
        elif verdict == "failed":
            document = documents[stored]
            assert document.status == "failed" and reason in document.error_message, (
                name,
                document.status,
                document.error_message,
            )
        else:
            assert documents[stored].status == "indexed", (name, documents[stored].error_message)
    for job in IngestionJob.objects.filter(pk__in=job_ids):
        assert job.status == "succeeded", job.error_message
    # The rest of the knowledge base is as it was, plus the files that were indexed.
    indexed = {d.pk for d in documents.values() if d.status == "indexed"}
    after = {r["id"]: r["document_id"] for r in store.vectors.rows(columns=["id", "document_id"])}
    assert before <= set(after) and set(after.values()) == indexed
    assert store.vectors.ids() == store.bm25.ids()
    assert len(latencies) >= 10
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "hostile.json").write_text(
        json.dumps(
            {
                "files": len(corpus),
                "requests_meanwhile": len(latencies),
                "p50_ms": round(statistics.median(latencies) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1),
            }
        )
    )
    # The web process kept answering while it took the upload and the worker parsed.
    assert statistics.median(latencies) < 0.2, sorted(latencies)[-5:]
