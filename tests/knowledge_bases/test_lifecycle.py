"""Generation lifecycle on real LanceDB tables and tantivy indexes under tmp_path."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_check, generation_store, rollback_verdict
from knowledge_bases.models import Generation
from knowledge_bases.services import generation_promote, generation_rollback, generations_gc
from ragstudio.core.errors import Conflict, NotFound
from ragstudio.testing.generations import make_generation, make_rows, synthetic_documents
from tests.factories import make_kb, make_user

pytestmark = pytest.mark.django_db
S = Generation.Status


@pytest.fixture
def kb():  # type: ignore[no-untyped-def]
    return make_kb(make_user(), "life")


def test_a_good_ready_generation_passes_its_check(kb) -> None:
    ready = make_generation(kb, S.READY)
    assert ready.check_passed is True
    assert [item["name"] for item in ready.check_report] == [
        "counts",
        "ids",
        "embedder",
        "dimensions",
        "sample search",
    ]


def test_the_check_catches_stores_that_disagree(kb) -> None:
    broken = make_generation(kb, S.READY, checked=False)
    generation_store(broken).bm25.delete_documents(synthetic_documents(kb, 1))  # one row missing
    items = {i.name: i for i in generation_check(generation=broken)}
    assert not items["counts"].ok and "tantivy 5" in items["counts"].detail
    assert not items["ids"].ok and "1 only in LanceDB" in items["ids"].detail
    assert broken.check_passed is False
    empty = make_generation(kb, S.READY, rows=0, checked=False)
    assert {i.name for i in generation_check(generation=empty) if not i.ok} >= {
        "counts",
        "sample search",
    }


def test_promote_flips_the_pointer_archives_the_old_and_records_who(kb) -> None:
    user = kb.owner
    first = make_generation(kb, S.ACTIVE)
    second = make_generation(kb, S.READY)
    generation_promote(kb=kb, number=second.number, actor=user)
    kb.refresh_from_db()
    first.refresh_from_db()
    assert kb.active_generation == second and first.status == S.ARCHIVED and first.archived_at
    event = second.events.first()
    assert (event.from_status, event.to_status, event.actor) == ("ready", "active", user)
    assert first.events.first().to_status == "archived"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (S.BUILDING, "cannot be promoted: it is still building"),
        (S.FAILED, "cannot be promoted: its build failed"),
        (S.COLLECTED, "cannot be promoted: it was collected"),
    ],
)
def test_only_ready_or_archived_generations_can_be_promoted(kb, status, message) -> None:
    make_generation(kb, S.ACTIVE)
    target = make_generation(kb, status)
    with pytest.raises(Conflict, match=message):
        generation_promote(kb=kb, number=target.number)
    kb.refresh_from_db()
    assert kb.active_generation.number == 1


def test_a_generation_that_failed_or_skipped_its_check_cannot_be_promoted(kb) -> None:
    make_generation(kb, S.ACTIVE)
    unchecked = make_generation(kb, S.READY, checked=False)
    with pytest.raises(Conflict, match="has not been checked"):
        generation_promote(kb=kb, number=unchecked.number)
    generation_store(unchecked).bm25.delete_documents(synthetic_documents(kb, 1))
    generation_check(generation=unchecked)
    with pytest.raises(Conflict, match="did not pass its check: database 6, LanceDB 6, tantivy 5"):
        generation_promote(kb=kb, number=unchecked.number)
    with pytest.raises(Conflict, match="already active"):
        generation_promote(kb=kb, number=1)
    with pytest.raises(NotFound):
        generation_promote(kb=kb, number=99)


def test_rollback_steps_back_one_generation_at_a_time(kb) -> None:
    make_generation(kb, S.ARCHIVED)
    make_generation(kb, S.ARCHIVED)
    make_generation(kb, S.ACTIVE)
    assert generation_rollback(kb=kb).number == 2
    assert generation_rollback(kb=kb).number == 1
    with pytest.raises(Conflict, match="nothing to roll back to"):
        generation_rollback(kb=kb)
    statuses = dict(Generation.objects.filter(knowledge_base=kb).values_list("number", "status"))
    assert statuses == {1: "active", 2: "archived", 3: "archived"}
    assert generation_promote(kb=kb, number=3).number == 3  # and forward again


def test_rollback_undoes_the_last_promote_not_the_newest_number(kb) -> None:
    make_generation(kb, S.ARCHIVED)  # 1
    make_generation(kb, S.ARCHIVED)  # 2
    make_generation(kb, S.ACTIVE)  # 3
    assert generation_promote(kb=kb, number=2).number == 2  # 2 replaces 3
    kb.refresh_from_db()
    assert rollback_verdict(kb).target.number == 3
    assert generation_rollback(kb=kb).number == 3  # back to what the promote replaced
    assert generation_rollback(kb=kb).number == 2  # then what 3 had replaced
    assert generation_rollback(kb=kb).number == 1


def test_gc_keeps_the_generation_a_rollback_returns_to(kb) -> None:
    kb.retention = 1
    kb.save()
    make_generation(kb, S.ARCHIVED)  # 1
    make_generation(kb, S.ACTIVE)  # 2
    make_generation(kb, S.ARCHIVED)  # 3 (newer, served before 2 came back)
    generation_promote(kb=kb, number=1)  # 1 replaces 2: a rollback returns to 2
    kb.refresh_from_db()
    assert generations_gc(kb=kb)["collected"] == [3]  # not 2, although 3 is newer
    assert generation_rollback(kb=kb).number == 2


def test_rollback_without_an_active_generation_is_a_conflict(kb) -> None:
    with pytest.raises(Conflict, match="no active generation"):
        generation_rollback(kb=kb)


def test_gc_keeps_active_retention_young_and_busy_generations(kb) -> None:
    kb.retention = 2
    kb.save()
    old = [make_generation(kb, S.ARCHIVED) for _ in range(4)]  # 1..4, archived two days ago
    young = make_generation(kb, S.ARCHIVED, archived_ago=timedelta(minutes=5))  # 5
    busy = make_generation(kb, S.ARCHIVED)  # 6, a job still writes to it
    IngestionJob.objects.create(
        knowledge_base=kb, generation=busy, store_batch_size=10, embed_batch_size=8
    )
    failed = make_generation(kb, S.FAILED)  # 7
    failed.created_at = timezone.now() - timedelta(days=1)
    failed.save()
    active = make_generation(kb, S.ACTIVE)  # 8
    result = generations_gc(kb=kb)
    # Archived and not busy, newest first: 5 (young), 4, 3, 2, 1; retention keeps 5 and 4.
    assert result["collected"] == [1, 2, 3, 7]
    statuses = dict(Generation.objects.filter(knowledge_base=kb).values_list("number", "status"))
    assert statuses == {
        1: "collected",
        2: "collected",
        3: "collected",
        4: "archived",
        5: "archived",
        6: "archived",
        7: "collected",
        8: "active",
    }
    for generation in old[:3]:
        assert (
            not generation_store(generation).vectors.exists()
            and not generation_store(generation).bm25.exists()
        )
    for generation in (old[3], young, busy, active):
        assert generation_store(generation).vectors.count() == 6
    assert generations_gc(kb=kb)["collected"] == []  # nothing more to do


def test_a_crash_between_the_database_and_the_files_is_finished_by_the_next_gc(
    kb, monkeypatch
) -> None:
    kb.retention = 0
    kb.save()
    doomed = make_generation(kb, S.ARCHIVED)
    make_generation(kb, S.ACTIVE)
    from search.stores.generation import GenerationStore

    original = GenerationStore.drop
    monkeypatch.setattr(
        GenerationStore, "drop", lambda self: (_ for _ in ()).throw(OSError("power cut"))
    )
    with pytest.raises(OSError, match="power cut"):
        generations_gc(kb=kb)
    doomed.refresh_from_db()
    # The database already says collected (nothing can promote or roll back to it)...
    assert doomed.status == S.COLLECTED and doomed.files_deleted_at is None
    assert generation_store(doomed).vectors.exists()
    with pytest.raises(Conflict):
        generation_rollback(kb=kb)
    # ...and the next run deletes the files it left behind.
    monkeypatch.setattr(GenerationStore, "drop", original)
    assert generations_gc(kb=kb)["files_deleted"] == [doomed.number]
    assert not generation_store(doomed).vectors.exists()


@pytest.mark.filterwarnings("ignore:optimize.cleanup_older_than=0")  # no reader here
def test_gc_drops_the_files_a_ready_generation_no_longer_needs(kb, monkeypatch) -> None:
    from knowledge_bases.generations import gc

    make_generation(kb, S.ACTIVE, rows=1)
    ready = make_generation(kb, S.READY, rows=0)
    store = generation_store(ready)
    for row in make_rows(ready, 6):
        store.write([row])
    table = store.vectors.table()
    store.vectors.optimize(keep_versions_for=timedelta(days=1))  # as the build's compaction
    assert store.vectors.fragment_count() == 1 and len(table.list_versions()) > 2
    monkeypatch.setattr(gc, "KEEP_VERSIONS_FOR", timedelta(0))
    generations_gc(kb=kb)
    # Only the latest version is left, with every row.
    assert len(table.list_versions()) == 1 and store.vectors.count() == 6


def test_gc_compacts_the_active_table(kb) -> None:
    active = make_generation(kb, S.ACTIVE, rows=0)
    store = generation_store(active)
    for row in make_rows(active, 12):  # twelve incremental uploads of one chunk each
        store.write([row])
    assert store.vectors.fragment_count() == 12
    compacted = generations_gc(kb=kb)["compacted"]
    assert compacted == {"generation": active.number, "fragments_before": 12, "fragments_after": 1}
    assert store.vectors.count() == 12


@pytest.mark.django_db(transaction=True)
def test_concurrent_promotes_of_the_same_generation_have_exactly_one_winner(kb) -> None:
    make_generation(kb, S.ACTIVE)
    target = make_generation(kb, S.READY)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def promote() -> None:
        try:
            barrier.wait()
            generation_promote(kb=kb, number=target.number)
            outcomes.append("won")
        except Conflict as exc:
            outcomes.append(exc.message)
        finally:
            connection.close()

    threads = [threading.Thread(target=promote) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    refused = f"generation {target.number} cannot be promoted: it is already active"
    assert sorted(outcomes) == [refused] * 3 + ["won"]
    assert Generation.objects.filter(knowledge_base=kb, status=S.ACTIVE).count() == 1


def test_generations_through_the_api_and_the_cli(kb, settings) -> None:
    import io
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.test import Client

    from knowledge_bases.models import ApiToken

    make_generation(kb, S.ARCHIVED)
    make_generation(kb, S.ACTIVE)
    ready = make_generation(kb, S.READY)
    _row, token = ApiToken.issue(user=kb.owner)
    client = Client(headers={"Authorization": f"Bearer {token}"})
    listed = client.get("/api/kbs/life/generations").json()
    assert [(g["number"], g["status"], g["active"]) for g in listed] == [
        (3, "ready", False),
        (2, "active", True),
        (1, "archived", False),
    ]
    promoted = client.post(f"/api/kbs/life/generations/{ready.number}/promote")
    assert promoted.status_code == 200 and promoted.json()["active"] is True
    again = client.post(f"/api/kbs/life/generations/{ready.number}/promote")
    assert again.status_code == 409 and "already active" in again.json()["message"]
    assert client.post("/api/kbs/life/generations/rollback").json()["number"] == 2

    out = io.StringIO()
    call_command("generations", "life", "list", "--json", stdout=out)
    rows = json.loads(out.getvalue())
    assert rows[1] == {
        "number": 2,
        "status": "active",
        "chunks": 6,
        "fingerprint": "local-fast:test",
        "active": True,
    }
    call_command("generations", "life", "rollback", stdout=io.StringIO())
    with pytest.raises(CommandError, match="nothing to roll back to"):
        call_command("generations", "life", "rollback", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no generation 42"):
        call_command("generations", "life", "promote", "42", stdout=io.StringIO())
    kb.retention = 0
    kb.save(update_fields=["retention"])
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "GC_MIN_AGE_SECONDS": 0}
    gc = client.post("/api/kbs/life/generations/gc")
    assert gc.status_code == 200, gc.content
    body = gc.json()
    # Retention 0 and no minimum age: every archived generation goes, the active one stays.
    assert (body["collected"], body["files_deleted"]) == ([2, 3], [2, 3])
    assert body["compacted"]["generation"] == 1
    assert body["compacted"]["fragments_after"] <= body["compacted"]["fragments_before"]
    statuses = dict(Generation.objects.filter(knowledge_base=kb).values_list("number", "status"))
    assert statuses == {1: S.ACTIVE, 2: S.COLLECTED, 3: S.COLLECTED}


def test_admin_promote_asks_for_confirmation_then_promotes(kb) -> None:
    from django.test import Client

    staff = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    make_generation(kb, S.ACTIVE)
    ready = make_generation(kb, S.READY)
    url = "/admin/knowledge_bases/generation/"
    page = client.get(url).content.decode()
    assert "Size on disk" in page and " MB<" in page
    ask = client.post(url, {"action": "promote", "_selected_action": [ready.pk]})
    assert (
        ask.status_code == 200
        and "Are you sure you want to promote generation 2" in ask.content.decode()
    )
    kb.refresh_from_db()
    assert kb.active_generation.number == 1  # nothing happened yet
    done = client.post(
        url, {"action": "promote", "_selected_action": [ready.pk], "confirmed": "yes"}
    )
    assert done.status_code == 302
    kb.refresh_from_db()
    assert kb.active_generation.number == 2
    assert ready.events.first().actor == staff


def test_the_check_refuses_vectors_from_another_model(kb) -> None:
    other = make_generation(kb, S.READY, checked=False)
    Generation.objects.filter(pk=other.pk).update(embedder="openai:text-embedding-3-small")
    other.refresh_from_db()
    items = {i.name: i for i in generation_check(generation=other)}
    assert not items["embedder"].ok and "text-embedding-3-small" in items["embedder"].detail
    assert other.check_passed is False
