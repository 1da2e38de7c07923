"""Running an evaluation set on a generation: every mode ranks each query as a search
does, and nDCG@10, recall@10, recall@100 and MRR are kept per query and overall. Runs
asked for on the web are queued and measured by a worker, with their progress."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from knowledge_bases.generations import generation_reader
from knowledge_bases.models import Generation
from ragstudio.core.errors import Conflict, RagStudioError, TooManyRequests, ValidationError
from ragstudio.core.vocabulary import DEFAULT_FUSION, SEARCH_MODES
from ragstudio.env import rag_settings
from search.models import EvaluationQuery, EvaluationRun, EvaluationSet, Unit
from search.ranking.fusion import FusionParams
from search.ranking.metrics import first_occurrences, mean_metrics, query_metrics
from search.ranking.results import SearchParams
from search.selectors import judged_queries
from search.services import ranked_hits

# Chunks each mode ranks per query: enough for 100 distinct units in most cases.
EVAL_POOL = 300
TOP_KEPT = 10  # units kept per query and mode, for side-by-side comparisons
PROGRESS_EVERY = 1.0  # seconds between a queued run's progress writes

log = logging.getLogger(__name__)


def evaluation_run(
    *, evaluation_set: EvaluationSet, generation: Generation, user: Any = None
) -> EvaluationRun:
    """Measure a generation on a set here and now (the command line, the quality gate in
    the worker): every mode (hybrid with the default fusion) ranks each query as a search
    does; nDCG@10, recall@10, recall@100 and MRR per query and their means. Stored with
    the generation."""
    judged = _measurable(evaluation_set, generation)
    now = timezone.now()
    measured = _measure(generation, judged)
    return EvaluationRun.objects.create(
        evaluation_set=evaluation_set,
        generation=generation,
        set_version=evaluation_set.version,
        fusion=DEFAULT_FUSION,
        queries=len(judged),
        done=len(judged),
        metrics=measured.means,
        per_query=measured.per_query,
        seconds=measured.seconds,
        started_at=now,
        finished_at=timezone.now(),
        created_by=user if getattr(user, "pk", None) else None,
    )


def evaluation_run_request(
    *,
    evaluation_set: EvaluationSet,
    generation: Generation,
    user: Any = None,
    enqueue: bool = True,
) -> EvaluationRun:
    """Queue a run for a worker (the API and the pages: a set of a thousand queries takes
    a minute, which no web request should hold). Checked now: the generation must be
    searchable and the set have a judged query (409); one run of a set on a generation
    at a time (409, naming it); a user has at most RAGSTUDIO_USER_EVALUATIONS runs queued
    or running (429)."""
    judged = _measurable(evaluation_set, generation)
    person = user if getattr(user, "pk", None) else None
    with transaction.atomic():
        EvaluationSet.objects.select_for_update().filter(pk=evaluation_set.pk).first()
        live = EvaluationRun.objects.filter(
            evaluation_set=evaluation_set, generation=generation, status__in=EvaluationRun.LIVE
        ).first()
        if live is not None:
            raise Conflict(
                f"generation {generation.number} is already being evaluated on "
                f"{evaluation_set.name!r} (run {live.pk}, {live.status})",
                {"run": live.pk},
            )
        _user_limit_check(person)
        run = EvaluationRun.objects.create(
            evaluation_set=evaluation_set,
            generation=generation,
            status=EvaluationRun.Status.QUEUED,
            set_version=evaluation_set.version,
            fusion=DEFAULT_FUSION,
            queries=len(judged),
            created_by=person,
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _enqueue(run_id: int) -> None:
    from django_q.tasks import async_task

    async_task(
        "search.tasks.run_evaluation",
        run_id,
        task_name=f"evaluation-{run_id}",
        group="evaluations",
    )


def _user_limit_check(user: Any) -> None:
    cfg = rag_settings()
    limit = cfg["USER_EVALUATIONS"]
    if user is None or user.is_staff or not limit:
        return
    live = EvaluationRun.objects.filter(created_by=user, status__in=EvaluationRun.LIVE).count()
    if live >= limit:
        raise TooManyRequests(
            f"you have {live} evaluation runs queued or running, the most allowed here is "
            f"{limit}: try again when one has finished",
            retry_after=cfg["USER_LIMIT_RETRY_SECONDS"],
            extra={"limit": "evaluations", "max": limit},
        )


def evaluation_run_execute(run_id: int, *, pause: Callable[[], None] | None = None) -> str:
    """The worker's part: measure a queued run (a second delivery finds it taken and does
    nothing), writing how many queries are done as it goes; ``pause`` is called between
    queries (the worker may run a waiting ingestion job there). Returns the final status."""
    now = timezone.now()
    claimed = EvaluationRun.objects.filter(pk=run_id, status=EvaluationRun.Status.QUEUED).update(
        status=EvaluationRun.Status.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return "taken"
    run = EvaluationRun.objects.select_related("evaluation_set", "generation").get(pk=run_id)
    fields: dict[str, Any]
    try:
        evaluation_set = run.evaluation_set
        judged = _measurable(evaluation_set, run.generation)
        measured = _measure(
            run.generation, judged, progress=_Progress(run_id, len(judged)), pause=pause
        )
        fields = {
            "status": EvaluationRun.Status.SUCCEEDED,
            "set_version": evaluation_set.version,
            "queries": len(judged),
            "done": len(judged),
            "metrics": measured.means,
            "per_query": measured.per_query,
            "seconds": measured.seconds,
        }
    except RagStudioError as exc:
        fields = {"status": EvaluationRun.Status.FAILED, "error_message": exc.message}
    except Exception as exc:
        log.exception("evaluation run %s failed", run_id)
        fields = {
            "status": EvaluationRun.Status.FAILED,
            "error_message": f"internal error: {type(exc).__name__}: {exc}",
        }
    now = timezone.now()
    EvaluationRun.objects.filter(pk=run_id).update(finished_at=now, heartbeat_at=now, **fields)
    return str(fields["status"])


# A running run whose worker has not written for this long has lost it.
STALE_AFTER = timedelta(minutes=10)


def evaluation_runs_abandoned_fail(now: datetime | None = None) -> int:
    """Runs a worker will not finish fail with a reason (hourly): running without a
    heartbeat for STALE_AFTER (the worker died), or queued for a day (no worker runs)."""
    now = now or timezone.now()
    return EvaluationRun.objects.filter(
        Q(status=EvaluationRun.Status.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
        | Q(status=EvaluationRun.Status.QUEUED, created_at__lt=now - timedelta(days=1))
    ).update(
        status=EvaluationRun.Status.FAILED,
        finished_at=now,
        error_message="the worker stopped before it finished: run it again",
    )


class _Progress:
    """Writes a run's count of queries done (and its heartbeat) at most every
    PROGRESS_EVERY seconds."""

    def __init__(self, run_id: int, total: int) -> None:
        self.run_id, self.total, self.last = run_id, total, 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY and done < self.total:
            return
        self.last = now
        EvaluationRun.objects.filter(pk=self.run_id).update(done=done, heartbeat_at=timezone.now())


def _measurable(
    evaluation_set: EvaluationSet, generation: Generation
) -> list[tuple[EvaluationQuery, dict[Unit, int]]]:
    """The set's judged queries, once the generation is known to be measurable on it."""
    if generation.knowledge_base_id != evaluation_set.knowledge_base_id:
        raise ValidationError("the generation belongs to another knowledge base")
    generation.refresh_from_db(fields=["status"])
    if generation.status not in Generation.SEARCHABLE:
        raise Conflict(
            f"generation {generation.number} is {generation.status}: its files are gone",
            {"generation": generation.number},
        )
    judged = judged_queries(evaluation_set)
    if not judged:
        raise Conflict(
            f"evaluation set {evaluation_set.name!r} has no query with a relevant document yet",
            {"set": evaluation_set.name},
        )
    return judged


@dataclass(frozen=True, slots=True)
class _Measured:
    means: dict[str, dict[str, float]]
    per_query: list[dict[str, Any]]
    seconds: float


def _measure(
    generation: Generation,
    judged: list[tuple[EvaluationQuery, dict[Unit, int]]],
    *,
    progress: Callable[[int], None] | None = None,
    pause: Callable[[], None] | None = None,
) -> _Measured:
    started = time.perf_counter()
    store = generation_reader(generation)
    units_of: dict[str, tuple[int, str]] = {}
    titles: dict[Unit, str] = {}
    per_query: list[dict[str, Any]] = []
    totals: dict[str, list[dict[str, float]]] = {mode: [] for mode in SEARCH_MODES}
    for done, (query, grades) in enumerate(judged, start=1):
        by_record = {doc for doc, record in grades if record}
        modes: dict[str, Any] = {}
        for mode in SEARCH_MODES:
            params = SearchParams(
                query=query.text, mode=mode, limit=EVAL_POOL, fusion=FusionParams(DEFAULT_FUSION)
            )
            hits, _exact = ranked_hits(generation, store, params, EVAL_POOL, {})
            _learn_units(store, [h.chunk_id for h in hits], units_of, titles)
            ranked = first_occurrences(
                _unit(units_of.get(h.chunk_id), by_record) for h in hits if h.chunk_id in units_of
            )
            metrics = query_metrics(ranked, grades)
            totals[mode].append(metrics)
            modes[mode] = {
                **{k: round(v, 4) for k, v in metrics.items()},
                # [document id, record, title]: the unit and what a person calls it
                "top": [[*u, titles.get(u, "")] for u in ranked[:TOP_KEPT]],
            }
        per_query.append({"id": query.pk, "query": query.text, "modes": modes})
        if progress is not None:
            progress(done)
        if pause is not None:
            pause()
    means = {
        mode: {k: round(v, 4) for k, v in mean_metrics(rows).items()}
        for mode, rows in totals.items()
    }
    return _Measured(means, per_query, time.perf_counter() - started)


def _learn_units(
    store: Any,
    chunk_ids: list[str],
    units_of: dict[str, tuple[int, str]],
    titles: dict[Unit, str],
) -> None:
    missing = [c for c in chunk_ids if c not in units_of]
    if not missing:
        return
    for row in store.vectors.fetch(missing, ["document_id", "record_id", "title"]).values():
        document_id, record = int(row["document_id"]), row.get("record_id") or ""
        units_of[row["id"]] = (document_id, record)
        titles.setdefault((document_id, record), (row.get("title") or "")[:200])


def _unit(found: tuple[int, str] | None, by_record: set[int]) -> Unit:
    assert found is not None
    document_id, record = found
    return (document_id, record) if document_id in by_record else (document_id, "")
