"""Documents that change (issue 24): a file uploaded again under its name is a new version
that replaces the old one in one step as searches see it, reusing the vectors of unchanged
text; identical content is "unchanged"; history is kept and an old version can be restored;
a rollback brings back the versions its generation was built with; a cancelled job leaves
no half-indexed version findable."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from ingestion.jobs import job_claim, job_execute, run_job_and_queue
from ingestion.models import IngestionJob
from ingestion.services import document_version_restore
from knowledge_bases.generations import generation_store, version_masks
from knowledge_bases.models import Document, DocumentVersion, KnowledgeBase
from knowledge_bases.services import generation_rebuild_start, generation_rollback
from ragstudio.core.vocabulary import SEARCH_MODES
from search.ranking.filters import SearchFilter
from search.ranking.results import SearchParams
from search.services import knowledge_base_search
from tests.factories import make_kb, upload

pytestmark = pytest.mark.django_db(transaction=True)

MANUAL = "kaffee-anleitung.txt"


def manual(interval: str, *, steps: int = 12) -> bytes:
    """A coffee machine manual: one sentence about descaling, the rest unchanged."""
    lines = [
        f"Schritt {i}: Die Maschine reinigen und den Behälter Nummer {i} prüfen."
        for i in range(steps)
    ]
    lines.insert(steps // 2, f"Die Maschine alle {interval} Monate entkalken.")
    return " ".join(lines).encode()


def _run(job_id: int) -> IngestionJob:
    run_job_and_queue(job_id)
    return IngestionJob.objects.get(pk=job_id)


def _contents(kb: KnowledgeBase, query: str, mode: str = "hybrid", **filters: Any) -> list[str]:
    kb.refresh_from_db()
    params = SearchParams(
        query=query,
        mode=mode,
        limit=50,
        filter=SearchFilter.build(**filters),  # type: ignore[arg-type]
    )
    return [hit.content for hit in knowledge_base_search(kb=kb, params=params).results]


@pytest.fixture
def kb(alice) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "kaffee", chunk_size=32, chunk_overlap=0)
    assert _run(upload(kb, [(MANUAL, manual("drei"))]).job.pk).status == "succeeded"
    kb.refresh_from_db()
    return kb


def test_a_changed_file_is_a_new_version_that_replaces_the_old_one(kb, alice, settings) -> None:
    # No grace: the replaced version's rows go when the job ends (a search that began
    # before the switch may otherwise still look for them for a while).
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "VERSION_GRACE_SECONDS": 0}
    first = Document.objects.get(knowledge_base=kb)
    result = upload(kb, [(MANUAL, manual("zwei"))], user=alice)
    assert result.accepted == [] and [d.pk for d in result.versions] == [first.pk]
    job = _run(result.job.pk)
    assert job.status == "succeeded"
    # Only the changed sentence's chunk was embedded; every other chunk kept its vector.
    assert 0 < job.embedded < job.total and job.skipped == job.total - job.embedded
    document = Document.objects.get(knowledge_base=kb)  # still one document
    assert (document.version, document.serving_version, document.status) == (2, 2, "indexed")
    texts = " ".join(_contents(kb, "Wie oft die Maschine entkalken?"))
    assert "alle zwei Monate" in texts and "alle drei Monate" not in texts
    versions = list(DocumentVersion.objects.filter(document=document).order_by("number"))
    assert [v.number for v in versions] == [1, 2]
    assert versions[1].chunks_embedded == job.embedded < versions[1].chunk_count
    assert versions[1].uploaded_by == alice and versions[1].note == "uploaded"
    # The old version's rows are gone from the serving generation, and nothing is masked.
    store = generation_store(kb.active_generation)
    assert set(store.vectors.version_counts()) == {(document.pk, 2)}
    assert store.vectors.count() == store.bm25.count() == document.chunk_count
    assert version_masks(kb.active_generation) == []


def test_the_same_content_again_is_unchanged_and_new_mode_adds_a_document(kb) -> None:
    result = upload(kb, [(MANUAL, manual("drei"))])
    assert result.job is None and [name for name, _ in result.unchanged] == [MANUAL]
    assert Document.objects.get(knowledge_base=kb).version == 1
    separate = upload(kb, [(MANUAL, manual("vier"))], mode="new")
    assert len(separate.accepted) == 1 and separate.versions == []
    assert Document.objects.filter(knowledge_base=kb, original_filename=MANUAL).count() == 2


class PausesAfterItsFirstGroup:
    """The real model, pausing once after its first group of texts (``pause``)."""

    def __init__(self, inner: Any, pause: Any) -> None:
        self._inner, self._pause = inner, pause

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_stream(self, items: Any, **kwargs: Any) -> Any:
        for number, group in enumerate(self._inner.embed_stream(items, **kwargs)):
            if number == 1:
                self._pause()
            yield group


def _wait(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling state, bounded by the deadline


def test_no_search_finds_both_versions_or_neither_while_one_replaces_the_other(
    kb, monkeypatch
) -> None:
    """A reader searches in a loop, in every mode, while a new version is written. The
    job pauses once some of the new version's rows are stored, until the reader has
    searched twice more: each answer holds the old version's sentence or the new one's,
    never both and never neither."""
    from ingestion.embedders.local import FastLocalEmbedder
    from knowledge_bases.generations import storage as build_storage

    new = manual("zwei").replace(b"reinigen", b"gruendlich reinigen")  # every chunk changes
    job = upload(kb, [(MANUAL, new)], store_batch_size=2).job
    document = Document.objects.get(knowledge_base=kb)
    seen: list[tuple[bool, bool]] = []
    rounds = [0]
    errors: list[BaseException] = []
    done = threading.Event()

    def look() -> None:
        for mode in SEARCH_MODES:
            found = " ".join(_contents(kb, "Maschine entkalken Monate", mode=mode))
            seen.append(("alle drei Monate" in found, "alle zwei Monate" in found))
        rounds[0] += 1

    def reader() -> None:
        try:
            while not done.is_set():
                look()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    def pause() -> None:
        store = generation_store(kb.active_generation)
        _wait(lambda: (document.pk, 2) in store.vectors.version_counts(), "new rows stored")
        start = rounds[0]
        _wait(lambda: rounds[0] >= start + 2 or errors, "the reader to search twice more")

    monkeypatch.setattr(FastLocalEmbedder, "stream_group", 2)  # several groups
    real = build_storage.embedder_get
    monkeypatch.setattr(
        build_storage, "embedder_get", lambda spec: PausesAfterItsFirstGroup(real(spec), pause)
    )
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert _run(job.pk).status == "succeeded"
    finally:
        done.set()
        thread.join(timeout=120)
    look()  # after the switch
    assert not errors, errors
    assert (True, True) not in seen, "a search found both versions"
    assert (False, False) not in seen, "a search found neither version"
    assert seen[0] == (True, False) and seen[-1] == (False, True)


def test_a_restore_brings_an_old_version_back_as_a_new_one(kb, alice, settings) -> None:
    # The replaced version's rows stay (hidden) through the grace period: a restore in it
    # finds every vector there.
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "VERSION_GRACE_SECONDS": 3600}
    _run(upload(kb, [(MANUAL, manual("zwei"))]).job.pk)
    document = Document.objects.get(knowledge_base=kb)
    job = _run(document_version_restore(kb=kb, document=document, number=1, user=alice).pk)
    assert job.status == "succeeded" and job.embedded == 0 and job.skipped == job.total
    document.refresh_from_db()
    assert (document.version, document.serving_version) == (3, 3)
    third = DocumentVersion.objects.get(document=document, number=3)
    assert third.note == "restored from v1" and third.sha256 == document.sha256
    assert third.sha256 == DocumentVersion.objects.get(document=document, number=1).sha256
    texts = " ".join(_contents(kb, "Wie oft die Maschine entkalken?"))
    assert "alle drei Monate" in texts and "alle zwei Monate" not in texts


def test_a_rollback_returns_the_versions_its_generation_was_built_with(kb) -> None:
    _run(
        generation_rebuild_start(
            kb=kb, chunk_size=48, chunk_overlap=0, enqueue=False, auto_promote=True
        ).pk
    )
    kb.refresh_from_db()
    assert kb.active_generation.number == 2
    _run(upload(kb, [(MANUAL, manual("zwei"))]).job.pk)  # version 2, into generation 2
    generation_rollback(kb=kb)  # generation 1 was built with version 1
    document = Document.objects.get(knowledge_base=kb)
    assert (document.version, document.serving_version, document.status) == (1, 1, "indexed")
    assert document.sha256 == DocumentVersion.objects.get(document=document, number=1).sha256
    texts = " ".join(_contents(kb, "Wie oft die Maschine entkalken?"))
    assert "alle drei Monate" in texts and "alle zwei Monate" not in texts
    assert IngestionJob.objects.filter(status="queued").count() == 0  # nothing requeued
    # Uploading again numbers on from the history, which kept version 2.
    result = upload(kb, [(MANUAL, manual("fünf"))])
    assert result.versions[0].version == 3


class CancelsAfterItsFirstBatch:
    """The real model, but after its first batch the job is asked to stop (as the page's
    Cancel does) and the batch waits until the job's reporter has relayed it."""

    def __init__(self, inner: Any, job_id: int, relayed: threading.Event) -> None:
        self._inner, self._job_id, self._relayed = inner, job_id, relayed
        self._batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_stream(self, items: Any, **kwargs: Any) -> Any:
        for group in self._inner.embed_stream(items, **kwargs):
            self._batches += 1
            if self._batches == 2:
                IngestionJob.objects.filter(pk=self._job_id).update(cancel_requested=True)
                self._relayed.wait(timeout=30)
            yield group


def _cancelled_half_way(
    kb: KnowledgeBase, files: list[tuple[str, bytes]], monkeypatch
) -> IngestionJob:  # type: ignore[no-untyped-def]
    from ingestion.embedders.local import FastLocalEmbedder
    from knowledge_bases.generations import storage as build_storage

    job = upload(kb, files, store_batch_size=2).job
    monkeypatch.setattr(FastLocalEmbedder, "stream_group", 4)  # several groups a document
    relayed = threading.Event()
    real = build_storage.embedder_get
    monkeypatch.setattr(
        build_storage,
        "embedder_get",
        lambda spec: CancelsAfterItsFirstBatch(real(spec), job.pk, relayed),
    )
    done = job_execute(job_claim(job_id=job.pk), cancel=relayed)
    monkeypatch.undo()
    assert done.status == IngestionJob.Status.CANCELLED and 0 < done.persisted < done.total
    return done


def test_a_cancelled_job_leaves_no_document_half_indexed(kb, monkeypatch, settings) -> None:
    """A new document cut short is absent from searches; a new version cut short leaves
    its previous version serving whole. Retried, both finish and nothing was embedded
    twice."""
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "VERSION_GRACE_SECONDS": 3600}
    new_doc = " ".join(
        f"Der Mahlgrad {i} beeinflusst den Espresso stark." for i in range(12)
    ).encode()
    changed = manual("zwei").replace(b"reinigen", b"gruendlich reinigen")
    job = _cancelled_half_way(kb, [("mahlgrad.txt", new_doc), (MANUAL, changed)], monkeypatch)
    stored = generation_store(kb.active_generation).vectors.version_counts()
    grinder = Document.objects.get(original_filename="mahlgrad.txt")
    coffee = Document.objects.get(original_filename=MANUAL)
    # Rows of the new document or of the new version were written...
    assert {(grinder.pk, 1), (coffee.pk, 2)} & set(stored)
    for mode in SEARCH_MODES:  # ...but none is found
        assert not any("Mahlgrad" in t for t in _contents(kb, "Mahlgrad Espresso", mode=mode))
        found = " ".join(_contents(kb, "Maschine entkalken Monate", mode=mode))
        assert "alle drei Monate" in found and "alle zwei Monate" not in found
    assert (grinder.status, grinder.serving_version) == ("pending", 0)
    assert (coffee.status, coffee.version, coffee.serving_version) == ("pending", 2, 1)
    from ingestion.services import ingestion_job_retry

    retried = _run(ingestion_job_retry(job=job).pk)
    assert retried.status == "succeeded"
    assert any("Mahlgrad" in t for t in _contents(kb, "Mahlgrad Espresso", mode="lexical"))
    found = " ".join(_contents(kb, "Maschine entkalken Monate"))
    assert "alle zwei Monate" in found and "alle drei Monate" not in found
    # What stays masked is the replaced version, for the grace period only.
    assert version_masks(kb.active_generation) == [(coffee.pk, 1)]


def test_versions_through_the_api(kb, alice, client_for) -> None:
    client = client_for(alice)
    document = Document.objects.get(knowledge_base=kb)
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    body = SimpleUploadedFile("anything.txt", manual("sechs"), content_type="text/plain")
    response = client.put(
        f"/api/kbs/kaffee/documents/{document.pk}",
        data=encode_multipart(BOUNDARY, {"file": body}),
        content_type=MULTIPART_CONTENT,
    )
    assert response.status_code == 202, response.content
    assert response.json()["versions"][0]["version"] == 2
    _run(response.json()["job"]["id"])
    versions = client.get(f"/api/kbs/kaffee/documents/{document.pk}/versions").json()
    assert [(v["number"], v["current"], v["serving"]) for v in versions] == [
        (2, True, True),
        (1, False, False),
    ]
    assert versions[0]["uploaded_by"] == "alice" and versions[0]["chunks_embedded"] >= 1
    detail = client.get(f"/api/kbs/kaffee/documents/{document.pk}").json()
    assert (detail["version"], detail["serving_version"]) == (2, 2)
    restored = client.post(f"/api/kbs/kaffee/documents/{document.pk}/versions/1/restore")
    assert restored.status_code == 202, restored.content
    again = client.post(f"/api/kbs/kaffee/documents/{document.pk}/versions/3/restore")
    assert again.status_code in (404, 409)
    # External ids name documents whatever their file name; mode=new adds one.
    upload_one = client.post(
        "/api/kbs/kaffee/documents",
        {
            "files": SimpleUploadedFile("a.txt", b"Milch aufschaeumen mit Dampf."),
            "external_id": "wiki:42",
        },
    )
    assert upload_one.status_code == 202, upload_one.content
    renamed = client.post(
        "/api/kbs/kaffee/documents",
        {
            "files": SimpleUploadedFile("b.txt", b"Milch aufschaeumen mit viel Dampf."),
            "external_id": "wiki:42",
        },
    )
    assert renamed.json()["versions"][0]["original_filename"] == "b.txt"
    wrong = client.post(
        "/api/kbs/kaffee/documents",
        {"files": SimpleUploadedFile("c.txt", b"x y z words here."), "mode": "sideways"},
    )
    assert wrong.status_code == 422
