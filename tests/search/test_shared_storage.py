"""A knowledge base whose tables, indexes and uploads live in an object store (a real S3
API, moto's server): ingest, search, rebuild, promote, roll back, GC and delete through the
services, with "hosts" that share nothing but the database and the store (each its own
data directory: uploads on one, the job on another, searches on a third)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from ingestion.jobs import run_job_and_queue
from ingestion.services import document_delete
from knowledge_bases.models import Generation, KnowledgeBase
from knowledge_bases.services import (
    generation_promote,
    generation_rebuild_start,
    generation_rollback,
    generations_gc,
    knowledge_base_delete,
)
from ragstudio.testing.s3 import s3_options
from search.ranking.results import SearchParams
from search.services import knowledge_base_search
from search.stores.objects import ObjectStore, storage_options_items
from tests.factories import make_kb, upload

pytestmark = pytest.mark.django_db(transaction=True)
S = Generation.Status

DOCS = [
    ("volcanoes.txt", b"Volcanic eruptions release magma, ash and gases from the crust."),
    ("tides.txt", b"Ocean tides rise and fall with the gravitational pull of the moon."),
    ("enzymes.txt", b"Enzymes are proteins that speed up chemical reactions in cells."),
]


@pytest.fixture
def shared(s3_server, tmp_path):  # type: ignore[no-untyped-def]
    """Settings of an installation on the object store; ``host(name)`` switches this
    process to a host with a data directory of its own."""
    endpoint, bucket = s3_server
    uri = f"s3://{bucket}/install-{uuid.uuid4().hex[:8]}"
    options = s3_options(endpoint)
    original = django_settings.RAGSTUDIO

    @contextmanager
    def host(name: str) -> Iterator[Path]:
        data = tmp_path / name
        previous = django_settings.RAGSTUDIO
        django_settings.RAGSTUDIO = {
            **original,
            "UPLOAD_DIR": data / "uploads",
            "BM25_DIR": data / "bm25",
            "LANCEDB_URI": f"{uri}/lancedb",
            "STORAGE_URI": uri,
            "STORAGE_OPTIONS": options,
            "GC_MIN_AGE_SECONDS": 0,
        }
        try:
            yield data
        finally:
            django_settings.RAGSTUDIO = previous

    yield host, ObjectStore(uri, storage_options_items(options))


def _search(kb: KnowledgeBase, query: str, mode: str = "hybrid") -> list[str]:
    kb.refresh_from_db()
    outcome = knowledge_base_search(kb=kb, params=SearchParams(query=query, mode=mode))  # type: ignore[arg-type]
    return [hit.citation.filename for hit in outcome.results]


def test_a_knowledge_base_on_the_object_store_across_hosts(shared, alice) -> None:
    host, store = shared
    with host("web-a"):
        kb = make_kb(alice, "shared")
        job = upload(kb, DOCS).job
        assert job is not None
        uploads = store.list("uploads")
        assert len(uploads) == 3 and all(key.startswith(f"uploads/kb{kb.pk}/") for key in uploads)
    with host("worker-b") as worker_b:
        assert not (worker_b / "uploads").exists()  # the job reads the store's copies
        run_job_and_queue(job.pk)
        kb.refresh_from_db()
        first = kb.active_generation
        assert first is not None and first.bm25_version >= 1
        assert any(k.startswith(f"lancedb/{first.table_name}.lance/") for k in store.list())
        assert any(k.startswith(f"bm25/kb{kb.pk}/g1/") for k in store.list())
    with host("web-d") as web_d:
        assert _search(kb, "magma eruptions", "lexical")[0] == "volcanoes.txt"
        assert _search(kb, "moon pull on the sea")[0] == "tides.txt"
        assert (web_d / "bm25" / f"kb{kb.pk}" / "g1" / "meta.json").exists()  # its cache

    # A rebuild on another worker, promoted from web A; rolled back and collected from D.
    with host("worker-c"):
        rebuild = generation_rebuild_start(kb=kb, chunk_size=32, chunk_overlap=4, enqueue=False)
        run_job_and_queue(rebuild.pk)
        second = Generation.objects.get(pk=rebuild.generation_id)
        assert second.status == S.READY and second.check_passed is True
        assert second.bm25_version >= 1
    with host("web-a"):
        generation_promote(kb=kb, number=second.number)
        assert _search(kb, "chemical reactions in cells")[0] == "enzymes.txt"
    with host("web-d"):
        kb.refresh_from_db()
        assert kb.active_generation_id == second.pk
        assert _search(kb, "proteins", "lexical")[0] == "enzymes.txt"  # synced g2 here
        # A delete on this host reaches every host: the index it publishes is the newest.
        document_delete(kb=kb, document_id=kb.documents.get(original_filename="tides.txt").pk)
        assert len(store.list("uploads")) == 2  # its file left the store
    with host("web-a"):
        assert "tides.txt" not in _search(kb, "ocean tides moon", "lexical")
    with host("web-d"):
        generation_rollback(kb=kb)
        kb.refresh_from_db()
        assert kb.active_generation_id == first.pk
        KnowledgeBase.objects.filter(pk=kb.pk).update(retention=0)
        result = generations_gc(kb=kb)
        assert result["collected"] == [second.number]
        keys = store.list()
        assert not any(k.startswith(f"bm25/kb{kb.pk}/g{second.number}/") for k in keys)
        assert not any(k.startswith(f"lancedb/{second.table_name}.lance/") for k in keys)
        assert any(k.startswith(f"bm25/kb{kb.pk}/g1/") for k in keys)
    with host("worker-b"):
        # The rolled-back generation got the deleted document's chunks dropped and the
        # missing one requeued: nothing of tides.txt answers anywhere.
        assert "tides.txt" not in _search(kb, "ocean tides moon", "lexical")
    with host("web-a"):
        knowledge_base_delete(kb=kb)
        assert store.list() == {}  # tables, indexes and uploads: nothing left in the store
