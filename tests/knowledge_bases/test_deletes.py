"""Deletes go through the services on every surface (issue 10, case 4): a document's chunks
leave the serving generation and its file leaves the disk; a knowledge base's tables,
indexes and uploads are removed after the commit, finished by GC if a crash interrupts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.jobs import run_job_and_queue
from ingestion.services import document_delete
from knowledge_bases.generations import generation_store, storage_cleanup_run, upload_local_path
from knowledge_bases.models import Document, Generation, KnowledgeBase, StorageCleanup
from knowledge_bases.services import generation_rollback
from ragstudio.env import rag_settings
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def indexed(alice) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    kb = make_kb(alice, "docs")
    run_job_and_queue(
        upload(kb, [("a.txt", text(12, "enzymes")), ("b.txt", text(12, "volcanoes"))]).job.pk
    )
    kb.refresh_from_db()
    return kb


@pytest.fixture
def staff(login):  # type: ignore[no-untyped-def]
    return login(make_user("root", is_staff=True, is_superuser=True))


def _chunk_docs(generation: Generation) -> set[int]:
    rows = generation_store(generation).vectors.rows(columns=["document_id"])
    return {r["document_id"] for r in rows}


def test_deleting_a_document_in_the_admin_removes_its_chunks_and_file(indexed, staff) -> None:
    doc = Document.objects.get(original_filename="a.txt")
    path = upload_local_path(doc.storage_path)
    assert path.exists() and doc.pk in _chunk_docs(indexed.active_generation)
    response = staff.post(f"/admin/knowledge_bases/document/{doc.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Document.objects.filter(pk=doc.pk).exists() and not path.exists()
    store = generation_store(indexed.active_generation)
    assert doc.pk not in _chunk_docs(indexed.active_generation)
    assert store.vectors.ids() == store.bm25.ids()

    # The list's bulk action too.
    other = Document.objects.get(original_filename="b.txt")
    staff.post(
        "/admin/knowledge_bases/document/",
        {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
    )
    assert not Document.objects.filter(pk=other.pk).exists()
    assert _chunk_docs(indexed.active_generation) == set()


def test_a_deleted_document_stays_deleted_across_a_rollback(indexed) -> None:
    from knowledge_bases.services import generation_rebuild_start

    run_job_and_queue(generation_rebuild_start(kb=indexed, auto_promote=True, enqueue=False).pk)
    indexed.refresh_from_db()
    assert indexed.active_generation.number == 2
    doc = Document.objects.get(original_filename="a.txt")
    document_delete(kb=indexed, document_id=doc.pk)
    generation_rollback(kb=indexed)
    indexed.refresh_from_db()
    assert indexed.active_generation.number == 1
    assert doc.pk not in _chunk_docs(indexed.active_generation)  # not back from the archive
    store = generation_store(indexed.active_generation)
    assert store.vectors.ids() == store.bm25.ids()


class _Objects:
    """Objects under a prefix of the object store (scale-out run), checked like a path."""

    def __init__(self, prefix: str) -> None:
        from search.stores.objects import ObjectStore, storage_options_items

        cfg = rag_settings()
        self.store = ObjectStore(cfg["STORAGE_URI"], storage_options_items(cfg["STORAGE_OPTIONS"]))
        self.prefix = prefix

    def exists(self) -> bool:
        return bool(self.store.list(self.prefix))

    def __repr__(self) -> str:
        return f"{self.store.uri}/{self.prefix}"


def _kb_files(kb: KnowledgeBase) -> list[Path | _Objects]:
    """Where a knowledge base's files are: its data-directory folders (in the scale-out
    run, caches), its tables, and in the scale-out run its objects in the store."""
    cfg = rag_settings()
    places: list[Path | _Objects] = [
        Path(cfg["UPLOAD_DIR"]) / f"kb{kb.pk}",
        Path(cfg["BM25_DIR"]) / f"kb{kb.pk}",
    ]
    tables = [f"{g.table_name}.lance" for g in kb.generations.all()]
    if cfg["STORAGE_URI"]:
        places += [_Objects(f"uploads/kb{kb.pk}"), _Objects(f"bm25/kb{kb.pk}")]
        places += [_Objects(f"lancedb/{t}") for t in tables]
    else:
        places += [Path(cfg["LANCEDB_URI"]) / t for t in tables]
    return places


def test_deleting_a_kb_in_the_admin_or_the_api_removes_its_files(
    indexed, staff, client_for
) -> None:
    files = _kb_files(indexed)
    assert all(p.exists() for p in files)
    response = staff.post(
        f"/admin/knowledge_bases/knowledgebase/{indexed.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not KnowledgeBase.objects.filter(pk=indexed.pk).exists()
    assert [p for p in files if p.exists()] == []
    assert not StorageCleanup.objects.exists()

    other = make_kb(indexed.owner, "other")
    run_job_and_queue(upload(other, [("c.txt", text(8, "tides"))]).job.pk)
    files = _kb_files(other)
    response = client_for(other.owner).delete("/api/kbs/other")
    assert response.status_code == 204
    assert [p for p in files if p.exists()] == [] and not KnowledgeBase.objects.filter(
        slug="other"
    ).exists()


def test_files_a_failed_cleanup_leaves_are_removed_by_gc(indexed, monkeypatch) -> None:
    from knowledge_bases.generations import storage
    from knowledge_bases.services import generations_gc_all, knowledge_base_delete

    files = _kb_files(indexed)

    def killed(**_kwargs: object) -> None:
        raise OSError("the process died here")

    monkeypatch.setattr(storage, "drop_files", killed)
    knowledge_base_delete(kb=indexed)
    assert not KnowledgeBase.objects.filter(pk=indexed.pk).exists()
    recorded = 5 if rag_settings()["STORAGE_URI"] else 3  # + the store's two prefixes
    assert all(p.exists() for p in files) and StorageCleanup.objects.count() == recorded
    monkeypatch.undo()
    assert generations_gc_all()["files_of_deleted_knowledge_bases"] == recorded
    assert [p for p in files if p.exists()] == [] and not StorageCleanup.objects.exists()
    assert storage_cleanup_run() == 0  # nothing left


def test_a_kb_with_a_live_job_is_not_deleted(indexed, client_for) -> None:
    job = upload(indexed, [("late.txt", text(5, "late"))]).job
    response = client_for(indexed.owner).delete("/api/kbs/docs")
    assert response.status_code == 409 and f"job {job.pk}" in response.json()["message"]
    assert KnowledgeBase.objects.filter(pk=indexed.pk).exists()


def test_deleting_users_who_own_knowledge_bases_of_one_slug_keeps_them_all(
    admin_client,
) -> None:
    """Issue 25, case 9: deleting (in the admin) two users who each own a `shared-name`
    answered 500: their knowledge bases, left without an owner, collided on the slug."""
    from django.contrib.auth import get_user_model

    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    for user in (alice, bob, carol):
        make_kb(user, "shared-name")
    make_kb(alice, "only-alices")
    response = admin_client.post(
        "/admin/auth/user/",
        {"action": "delete_selected", "_selected_action": [alice.pk, bob.pk], "post": "yes"},
    )
    assert response.status_code == 302, response.content[:500]
    assert not get_user_model().objects.filter(pk__in=[alice.pk, bob.pk]).exists()
    slugs = sorted(KnowledgeBase.objects.values_list("slug", "owner__username"))
    # Sorted as text on both sides: user 10's slug sorts before user 9's.
    assert slugs == sorted(
        [
            ("only-alices", None),  # no clash: its slug is kept
            ("shared-name", "carol"),
            (f"shared-name-u{alice.pk}", None),
            (f"shared-name-u{bob.pk}", None),
        ]
    )


def test_the_same_content_uploaded_while_a_document_is_deleted_keeps_its_file(
    monkeypatch,
) -> None:
    """Issue 25, case 9: a delete decided which files no row used, committed, then deleted
    them; an upload of the same content committed in between lost its file (1 round in
    30). The upload lands exactly there: after the delete's commit, before its files go."""
    from ingestion.services import documents as documents_module

    kb = make_kb(make_user("dora"), "notes")
    body = text(10, "shared")
    result = upload(kb, [("a.txt", body)])
    first = result.accepted[0]
    run_job_and_queue(result.job.pk)  # type: ignore[union-attr]
    forget = documents_module.files_forget_unused
    uploaded: list[Document] = []

    def upload_meanwhile(kb_arg, paths):  # type: ignore[no-untyped-def]
        uploaded.extend(upload(kb, [("again.txt", body)]).accepted)
        forget(kb_arg, paths)

    monkeypatch.setattr(documents_module, "files_forget_unused", upload_meanwhile)
    document_delete(kb=kb, document_id=first.pk)
    assert len(uploaded) == 1  # a new document: the old one was gone
    again = Document.objects.get(pk=uploaded[0].pk)
    assert again.storage_path == first.storage_path  # content-addressed: the same file
    assert upload_local_path(again.storage_path).read_bytes() == body
