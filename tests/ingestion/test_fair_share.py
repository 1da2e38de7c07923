"""Fair share between users (issue 25): jobs are taken round robin over users, and one
user's queued jobs and rebuilds are bounded (429 with Retry-After)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from ingestion.jobs import fair_candidates, run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.services import generation_rebuild_start
from ragstudio.core.errors import TooManyRequests
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_free_worker_takes_the_user_served_longest_ago_first(alice, settings) -> None:
    """Issue 25, case 5: alice's five queued uploads made bob's one file wait behind all of
    them; now bob's job runs right after the one alice's worker was on. (Yielding inside a
    job is the next test's; a long window keeps it out of this one.)"""
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "JOB_WINDOW_SECONDS": 3600.0}
    bob = make_user("bob")
    mine, theirs = make_kb(alice, "mine"), make_kb(bob, "theirs")
    alice_jobs = [
        upload(mine, [(f"a{n}.txt", text(6, f"alpha{n}"))], user=alice, enqueue=False).job
        for n in range(5)
    ]
    bob_job = upload(theirs, [("b.txt", text(6, "beta"))], user=bob, enqueue=False).job
    assert bob_job is not None and all(alice_jobs)
    ran = run_job_and_queue(alice_jobs[0].pk)  # type: ignore[union-attr]
    assert ran[0] == alice_jobs[0].pk  # type: ignore[union-attr]
    assert ran[1] == bob_job.pk  # next, not sixth
    # Within one generation, first in first out: alice's in the order she queued them.
    assert ran[2:] == [j.pk for j in alice_jobs[1:]]  # type: ignore[union-attr]
    assert set(IngestionJob.objects.values_list("status", flat=True)) == {"succeeded"}


def test_a_long_job_lets_another_user_s_waiting_job_run_after_a_window(alice, settings) -> None:
    """Issue 25: a long job used to hold the worker to its end; after a window it now runs
    another user's waiting job, then goes on where it was (nothing redone). A user's
    own jobs never jump ahead of each other this way."""
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "JOB_WINDOW_SECONDS": 0.0}
    bob = make_user("bob")
    mine, other_mine, theirs = make_kb(alice, "mine"), make_kb(alice, "more"), make_kb(bob, "b")
    files = [(f"a{n}.txt", text(6, f"alpha{n}")) for n in range(4)]
    long_job = upload(mine, files, user=alice, enqueue=False).job
    own_job = upload(other_mine, [("m.txt", text(6, "more"))], user=alice, enqueue=False).job
    bob_job = upload(theirs, [("b.txt", text(6, "beta"))], user=bob, enqueue=False).job
    assert long_job is not None and own_job is not None and bob_job is not None

    ran = run_job_and_queue(long_job.pk)
    jobs = {j.pk: j for j in IngestionJob.objects.all()}
    long_job, own_job, bob_job = jobs[long_job.pk], jobs[own_job.pk], jobs[bob_job.pk]
    assert {j.status for j in jobs.values()} == {"succeeded"}
    assert ran[0] == long_job.pk and bob_job.pk not in ran  # bob's ran inside alice's
    assert long_job.started_at < bob_job.started_at  # type: ignore[operator]
    assert bob_job.finished_at < long_job.finished_at  # type: ignore[operator]
    # alice's other job waited for her long one; her documents were each indexed once.
    assert own_job.started_at > long_job.finished_at  # type: ignore[operator]
    assert long_job.documents_done == 4 and long_job.documents_failed == 0
    assert sorted(mine.documents.values_list("status", flat=True)) == ["indexed"] * 4
    assert theirs.documents.get().status == "indexed"


def test_a_user_served_inside_another_s_long_job_waits_for_the_next_turn(alice) -> None:
    """Found by bench/fairness.py: bob's upload ran inside alice's long rebuild, which then
    ended; by their last start alice (who started first) looked served longest ago, so
    her next job went ahead of bob's next upload. Who was served last counts when the
    work ended too."""
    bob = make_user("bob")
    mine, theirs = make_kb(alice, "mine"), make_kb(bob, "theirs")
    jobs = [
        upload(kb, [(f"{n}.txt", text(4, f"topic{n}"))], user=user).job
        for n, (kb, user) in enumerate([(mine, alice), (theirs, bob), (mine, alice), (theirs, bob)])
    ]
    long_job, nested, alice_next, bob_next = [j.pk for j in jobs]  # type: ignore[union-attr]
    t0 = timezone.now() - timedelta(minutes=5)
    done = IngestionJob.Status.SUCCEEDED
    IngestionJob.objects.filter(pk=long_job).update(
        status=done, started_at=t0, finished_at=t0 + timedelta(seconds=60)
    )
    IngestionJob.objects.filter(pk=nested).update(
        status=done, started_at=t0 + timedelta(seconds=10), finished_at=t0 + timedelta(seconds=12)
    )
    assert fair_candidates() == [bob_next, alice_next]
    # While one of bob's jobs runs (on another worker), he is being served now.
    IngestionJob.objects.filter(pk=nested).update(
        status=IngestionJob.Status.RUNNING, finished_at=None
    )
    assert fair_candidates() == [alice_next, bob_next]
    assert fair_candidates(excluding_users={alice.pk}) == [bob_next]


def test_a_task_whose_job_another_task_ran_ends_at_once(alice) -> None:
    kb = make_kb(alice, "mine")
    first = upload(kb, [("a.txt", text(6, "alpha"))], user=alice, enqueue=False).job
    second = upload(kb, [("b.txt", text(6, "beta"))], user=alice, enqueue=False).job
    assert run_job_and_queue(first.pk) == [first.pk, second.pk]  # type: ignore[union-attr]
    assert run_job_and_queue(second.pk) == []  # type: ignore[union-attr]


def test_one_user_s_queued_jobs_and_rebuilds_are_bounded(alice, client_for, settings) -> None:
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "USER_QUEUED_JOBS": 2, "USER_REBUILDS": 1}
    bob = make_user("bob")
    kb = make_kb(bob, "theirs")
    for n in range(2):
        upload(kb, [(f"b{n}.txt", text(6, f"beta{n}"))], user=bob, enqueue=True)
    with pytest.raises(TooManyRequests, match="2 jobs waiting"):
        upload(kb, [("b9.txt", text(6, "more"))], user=bob, enqueue=True)
    response = client_for(bob).post(
        "/api/kbs/theirs/documents", {"files": [SimpleUploadedFile("late.txt", text(6, "late"))]}
    )
    assert response.status_code == 429
    assert response["Retry-After"] == "30"
    assert response.json()["extra"] == {"limit": "queued_jobs", "max": 2, "retry_after": 30}
    assert not kb.documents.filter(original_filename__in=["b9.txt", "late.txt"]).exists()
    # Other users, staff and the command line (no user) are not held by bob's backlog.
    upload(make_kb(alice, "mine"), [("a.txt", text(6, "alpha"))], user=alice, enqueue=True)
    staff = make_user("root", is_staff=True)
    upload(kb, [("s.txt", text(6, "staff"))], user=staff, enqueue=True)
    upload(kb, [("c.txt", text(6, "cli"))], enqueue=True)

    # Once his jobs have run, bob may queue again; rebuilds have their own bound.
    for job in IngestionJob.objects.filter(status="queued"):
        run_job_and_queue(job.pk)
    kb.refresh_from_db()
    other = make_kb(bob, "other")
    run_job_and_queue(upload(other, [("o.txt", text(6, "other"))], user=bob).job.pk)  # type: ignore[union-attr]
    generation_rebuild_start(kb=kb, user=bob, enqueue=True)
    with pytest.raises(TooManyRequests, match="1 rebuilds queued or running"):
        generation_rebuild_start(kb=other, user=bob, enqueue=True)
    response = client_for(bob).post(
        "/api/kbs/other/generations/rebuild", {}, content_type="application/json"
    )
    assert response.status_code == 429 and "Retry-After" in response


def test_work_yields_at_the_last_step_boundary_inside_its_window(monkeypatch, settings) -> None:
    """Another user's job waited a whole window plus most of a step: the yield came at the
    first boundary past the window. It now comes at the last boundary inside it, judging
    the next step by the one just ended (a unit test: the clock and the claim are stubs)."""
    from ingestion.jobs import run as jobs_run

    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "JOB_WINDOW_SECONDS": 10.0}
    clock = [100.0]
    looked_at: list[float] = []
    monkeypatch.setattr(jobs_run.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(
        jobs_run, "_claim_fairest", lambda users: looked_at.append(clock[0] - 100.0)
    )
    pause = jobs_run.JobYield("work", frozenset({1}))
    for _ in range(8):  # steps of 3 s: boundaries at 3, 6, 9, 12, ...
        clock[0] += 3.0
        pause()
    # At 9 s the next step would end at 12, past the window: yield then, and again at 18
    # (9 s after the last yield, with a 3 s step to come), not at 12 and 24.
    assert looked_at == [9.0, 18.0]
