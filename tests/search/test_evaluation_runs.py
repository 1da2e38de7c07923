"""Evaluation runs asked for on the web are measured by a worker (issue 25): the request
only queues them; a user's live runs are bounded; a run whose worker died fails with a
reason; and a long run lets another user's waiting upload through."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.models import KnowledgeBase
from ragstudio.core.errors import Conflict, TooManyRequests
from search.evaluation import (
    QueryIn,
    evaluation_queries_add,
    evaluation_run,
    evaluation_run_execute,
    evaluation_run_request,
    evaluation_runs_abandoned_fail,
    evaluation_set_create,
)
from search.models import EvaluationRun, EvaluationSet, Judgement
from search.tasks import run_evaluation
from tests.factories import make_kb, make_user, text, upload

pytestmark = pytest.mark.django_db(transaction=True)

TOPICS = ("enzymes", "volcanoes", "tides", "glaciers")


def _kb_with_set(owner, slug: str = "science") -> tuple[KnowledgeBase, EvaluationSet]:  # type: ignore[no-untyped-def]
    kb = make_kb(owner, slug)
    run_job_and_queue(
        upload(kb, [(f"{t}.txt", text(8, t)) for t in TOPICS], user=owner).job.pk  # type: ignore[union-attr]
    )
    kb.refresh_from_db()
    evaluation_set = evaluation_set_create(kb=kb, name="basics")
    evaluation_queries_add(
        evaluation_set=evaluation_set,
        queries=[QueryIn(text=f"detail about {t}", relevant=[f"{t}.txt"]) for t in TOPICS],
    )
    return kb, evaluation_set


def test_a_queued_run_measures_what_a_run_in_process_measures(alice) -> None:
    kb, evaluation_set = _kb_with_set(alice)
    generation = kb.active_generation
    assert generation is not None
    queued = evaluation_run_request(
        evaluation_set=evaluation_set, generation=generation, user=alice, enqueue=False
    )
    assert (queued.status, queued.done, queued.queries, queued.metrics) == ("queued", 0, 4, {})
    assert run_evaluation(queued.pk) == "succeeded"  # the worker's task
    queued.refresh_from_db()
    direct = evaluation_run(evaluation_set=evaluation_set, generation=generation)
    assert queued.metrics == direct.metrics and queued.metrics["hybrid"]["recall@10"] == 1.0
    assert queued.done == 4 and queued.started_at and queued.finished_at
    assert [q["query"] for q in queued.per_query] == [q["query"] for q in direct.per_query]


def test_live_runs_are_bounded_per_user_and_per_set_and_generation(alice, settings) -> None:
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "USER_EVALUATIONS": 1}
    kb, evaluation_set = _kb_with_set(alice)
    generation = kb.active_generation
    assert generation is not None
    other_set = evaluation_set_create(kb=kb, name="other")
    evaluation_queries_add(
        evaluation_set=other_set, queries=[QueryIn(text="tides", relevant=["tides.txt"])]
    )
    first = evaluation_run_request(
        evaluation_set=evaluation_set, generation=generation, user=alice, enqueue=False
    )
    with pytest.raises(Conflict, match=f"already being evaluated on 'basics' \\(run {first.pk}"):
        evaluation_run_request(evaluation_set=evaluation_set, generation=generation, user=alice)
    with pytest.raises(TooManyRequests, match="1 evaluation runs queued or running") as refused:
        evaluation_run_request(evaluation_set=other_set, generation=generation, user=alice)
    assert refused.value.retry_after == 30
    staff = make_user("root", is_staff=True)
    evaluation_run_request(
        evaluation_set=other_set, generation=generation, user=staff, enqueue=False
    )
    assert evaluation_run_execute(first.pk) == "succeeded"
    # Once hers has finished, alice may ask again.
    again = evaluation_run_request(
        evaluation_set=evaluation_set, generation=generation, user=alice, enqueue=False
    )
    assert list(EvaluationRun.objects.filter(status="queued").order_by("pk")) == [
        EvaluationRun.objects.get(created_by=staff),
        again,
    ]


def test_a_run_fails_with_its_reason_and_an_abandoned_one_is_failed(alice) -> None:
    kb, evaluation_set = _kb_with_set(alice)
    generation = kb.active_generation
    assert generation is not None
    queued = evaluation_run_request(
        evaluation_set=evaluation_set, generation=generation, user=alice, enqueue=False
    )
    # The set's judgements are removed before a worker reaches it.
    Judgement.objects.filter(query__evaluation_set=evaluation_set).delete()
    assert evaluation_run_execute(queued.pk) == "failed"
    queued.refresh_from_db()
    assert queued.error_message == (
        "evaluation set 'basics' has no query with a relevant document yet"
    )
    assert queued.metrics == {} and queued.finished_at is not None

    now = timezone.now()

    def running(minutes_ago: int) -> EvaluationRun:
        return EvaluationRun.objects.create(
            evaluation_set=evaluation_set,
            generation=generation,
            status="running",
            heartbeat_at=now - timedelta(minutes=minutes_ago),
            set_version=1,
            fusion="rrf",
            queries=4,
        )

    stuck, young = running(11), running(1)
    assert evaluation_runs_abandoned_fail(now) == 1
    stuck.refresh_from_db()
    young.refresh_from_db()
    assert stuck.status == "failed" and "the worker stopped" in stuck.error_message
    assert young.status == "running"


def test_a_long_run_lets_another_user_s_waiting_upload_through(alice, settings) -> None:
    """The worker measures alice's run query by query; bob's upload, queued meanwhile,
    runs after one window instead of after the whole run."""
    kb, evaluation_set = _kb_with_set(alice)
    generation = kb.active_generation
    assert generation is not None
    queued = evaluation_run_request(
        evaluation_set=evaluation_set, generation=generation, user=alice, enqueue=False
    )
    bob = make_user("bob")
    bob_job = upload(make_kb(bob, "bobs"), [("b.txt", text(6, "beta"))], user=bob).job
    assert bob_job is not None
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "JOB_WINDOW_SECONDS": 0.0}
    assert run_evaluation(queued.pk) == "succeeded"
    bob_job.refresh_from_db()
    queued.refresh_from_db()
    assert bob_job.status == IngestionJob.Status.SUCCEEDED
    assert queued.started_at < bob_job.started_at  # type: ignore[operator]
    assert bob_job.finished_at < queued.finished_at  # type: ignore[operator]
