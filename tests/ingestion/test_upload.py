from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from ingestion.models import IngestionJob
from ingestion.services import ingestion_job_cancel, ingestion_job_create
from knowledge_bases.models import Document, Generation
from ragstudio.core.errors import Conflict, ValidationError
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db


def test_upload_stores_files_creates_documents_and_one_job() -> None:
    kb = make_kb(make_user())
    result = upload(kb, [("a.txt", text(5)), ("b.md", b"# B\n\nbody text")])
    assert [d.original_filename for d in result.accepted] == ["a.txt", "b.md"]
    assert {d.content_type for d in result.accepted} == {"text/plain", "text/markdown"}
    job = result.job
    assert job is not None and job.status == IngestionJob.Status.QUEUED
    assert set(job.documents.all()) == set(result.accepted)
    stored = Path(settings.RAGSTUDIO["UPLOAD_DIR"]) / result.accepted[0].storage_path
    assert stored.read_bytes() == text(5)
    # The first upload creates generation 1, building until its first job finishes.
    assert job.generation.number == 1 and job.generation.status == Generation.Status.BUILDING


def test_the_same_content_twice_is_a_duplicate_not_a_second_document() -> None:
    kb = make_kb(make_user())
    first = upload(kb, [("a.txt", text(5))])
    again = upload(kb, [("renamed.txt", text(5)), ("new.txt", text(6))])
    assert [(n, d.pk) for n, d in again.duplicates] == [("renamed.txt", first.accepted[0].pk)]
    assert [d.original_filename for d in again.accepted] == ["new.txt"]
    same_request = upload(kb, [("x.txt", b"twin"), ("y.txt", b"twin")])
    assert [d.original_filename for d in same_request.accepted] == ["x.txt"]
    assert same_request.rejected == [("y.txt", "duplicate of 'x.txt' in this upload")]
    assert Document.objects.filter(knowledge_base=kb).count() == 3


def test_the_same_content_in_another_kb_is_a_separate_document() -> None:
    user = make_user()
    one, two = make_kb(user, "one"), make_kb(user, "two")
    upload(one, [("a.txt", text(3))])
    assert len(upload(two, [("a.txt", text(3))]).accepted) == 1


def test_bad_files_are_rejected_with_reasons_and_leave_nothing_behind(settings) -> None:
    settings.RAGSTUDIO_MAX_UPLOAD_BYTES = 1000
    kb = make_kb(make_user())
    result = upload(
        kb,
        [
            ("empty.txt", b""),
            ("anim.gif", b"GIF89a" + b"\x00" * 50),
            ("huge.txt", b"a" * 1001),
            ("ok.txt", b"fine text"),
        ],
    )
    reasons = dict(result.rejected)
    assert "empty file" in reasons["empty.txt"]
    assert "unsupported file type: GIF image" in reasons["anim.gif"]
    assert "file too large" in reasons["huge.txt"]
    assert [d.original_filename for d in result.accepted] == ["ok.txt"]
    upload_dir = Path(settings.RAGSTUDIO["UPLOAD_DIR"]) / f"kb{kb.pk}"
    assert [p.name for p in upload_dir.rglob("*") if p.is_file()] == [result.accepted[0].sha256]


def test_nothing_uploaded_and_bad_batch_sizes_are_validation_errors() -> None:
    kb = make_kb(make_user())
    with pytest.raises(ValidationError, match="no files"):
        upload(kb, [])
    with pytest.raises(ValidationError, match="store_batch_size"):
        upload(kb, [("a.txt", b"x")], store_batch_size=0)
    assert not Document.objects.exists()


def test_file_names_are_reduced_to_a_safe_base_name() -> None:
    kb = make_kb(make_user())
    (doc,) = upload(kb, [("../../etc/pass\x00wd.txt", b"content")]).accepted
    assert doc.original_filename == "passwd.txt"
    assert ".." not in doc.storage_path


def test_a_new_job_picks_up_pending_documents_no_live_job_holds() -> None:
    kb = make_kb(make_user())
    first = upload(kb, [("a.txt", text(3))])
    ingestion_job_cancel(job=first.job)
    second = upload(kb, [("b.txt", text(4))])
    names = sorted(second.job.documents.values_list("original_filename", flat=True))
    assert names == ["a.txt", "b.txt"]
    third = ingestion_job_create(kb=kb, documents=[], enqueue=False)
    assert third.documents.count() == 0  # both are held by the queued second job


def test_cancelling_a_queued_job_is_immediate_and_a_finished_one_is_a_conflict() -> None:
    kb = make_kb(make_user())
    job = upload(kb, [("a.txt", b"x y z")]).job
    job = ingestion_job_cancel(job=job)
    assert job.status == IngestionJob.Status.CANCELLED and job.finished_at is not None
    with pytest.raises(Conflict, match="already finished"):
        ingestion_job_cancel(job=job)


def test_upload_enqueues_a_worker_task_after_commit(django_capture_on_commit_callbacks) -> None:
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    broker = get_broker()  # the ORM's table, or Redis in the scale-out run
    broker.purge_queue()
    kb = make_kb(make_user())
    with django_capture_on_commit_callbacks(execute=True):
        job = upload(kb, [("a.txt", b"x y z")], enqueue=True).job
    (queued,) = broker.dequeue() or []
    task = SignedPackage.loads(queued[1])
    assert task["func"] == "ingestion.tasks.run_ingestion_job"
    assert task["args"] == (job.pk,)
    assert broker.queue_size() == 0  # one task: no cluster is running here


@pytest.mark.django_db(transaction=True)
def test_parallel_uploads_cannot_pass_the_quota_together(monkeypatch, settings) -> None:
    """Issue 25, case 7: with a 1 MB quota, two parallel 600 KB uploads were both accepted
    (the quota was checked while staging, before either stored its file). Both uploads here
    finish staging before either stores, the worst interleaving."""
    import threading

    from django.db import connection

    from ingestion.services import uploads

    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "QUOTA_BYTES": 1_000_000}
    owner = make_user("quota")
    kbs = [make_kb(owner, "first"), make_kb(owner, "second")]
    both_staged = threading.Barrier(2)
    stage = uploads._stage

    def stage_then_wait(*args, **kwargs):  # type: ignore[no-untyped-def]
        staged = stage(*args, **kwargs)
        both_staged.wait(timeout=60)
        return staged

    monkeypatch.setattr(uploads, "_stage", stage_then_wait)
    results = {}

    def send(kb, word: str) -> None:  # type: ignore[no-untyped-def]
        try:
            results[word] = upload(kb, [(f"{word}.txt", ((word + " ") * 100_000).encode())])
        finally:
            connection.close()

    threads = [
        threading.Thread(target=send, args=(kb, word))
        for kb, word in zip(kbs, ("alpha", "bravo"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == ["alpha", "bravo"]
    accepted = [d for r in results.values() for d in r.accepted]
    rejected = [reason for r in results.values() for _name, reason in r.rejected]
    assert len(accepted) == 1, rejected
    assert len(rejected) == 1 and rejected[0].startswith("over the storage quota: 600,000")
    assert Document.objects.filter(knowledge_base__owner=owner).count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_upload_the_database_aborts_for_a_deadlock_is_placed_again(monkeypatch) -> None:
    """PostgreSQL checks foreign keys at commit; an upload and a swap or a job ending at
    that moment can deadlock and the database aborts one (seen in the scale-out run while
    swaps were hammered during uploads). The upload tries again, once nothing of it stayed."""
    from django.db import OperationalError

    from ingestion.services import uploads

    class Deadlock(Exception):
        sqlstate = "40P01"

    create = uploads.ingestion_job_create
    calls = []

    def aborted_once(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            try:
                raise Deadlock("deadlock detected")
            except Deadlock as cause:
                raise OperationalError("deadlock detected") from cause
        return create(**kwargs)

    monkeypatch.setattr(uploads, "ingestion_job_create", aborted_once)
    kb = make_kb(make_user(), "retry")
    result = upload(kb, [("a.txt", text(20)), ("b.txt", text(20, "rivers"))])
    assert len(calls) == 2 and result.job is not None
    assert [d.original_filename for d in result.accepted] == ["a.txt", "b.txt"]
    assert Document.objects.filter(knowledge_base=kb).count() == 2
    from knowledge_bases.generations import upload_local_path

    for document in Document.objects.filter(knowledge_base=kb):
        assert upload_local_path(document.storage_path).exists()
