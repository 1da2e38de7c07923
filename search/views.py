"""The search playground: one generation's results, or two side by side."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from pydantic import ValidationError as PydanticError

from knowledge_bases.generations import generation_get, generations_searchable
from knowledge_bases.models import KnowledgeBase
from knowledge_bases.selectors import (
    knowledge_base_can_change,
    knowledge_base_get,
    knowledge_base_ref,
)
from ragstudio.core.bounds import SEARCH_OFFSET
from ragstudio.core.errors import RagStudioError, ValidationError
from ragstudio.core.vocabulary import (
    DEFAULT_FUSION,
    DEFAULT_MODE,
    METRIC_LABELS,
    METRICS,
    SCORE_MEANINGS,
    SEARCH_MODES,
    gate_label,
)
from ragstudio.views import get_or_404, is_htmx
from search.evaluation import (
    comparison_detail,
    evaluation_import,
    evaluation_run_request,
    evaluation_set_delete,
    judgement_mark,
)
from search.forms import EvalImportForm, JudgeForm, SearchForm
from search.models import EvaluationRun
from search.ranking.results import SearchOutcome
from search.schemas import SearchIn
from search.selectors import (
    evaluation_set_get,
    evaluation_sets_of,
    latest_attempt,
    latest_run,
    playground_marks,
)
from search.services import knowledge_base_search


@login_required
def kb_search(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user)
    numbers = list(generations_searchable(kb).values_list("number", flat=True))
    form = SearchForm(request.GET or None, numbers=numbers)
    context: dict[str, Any] = {
        "kb": kb,
        "kb_ref": knowledge_base_ref(kb, request.user),
        "form": form,
        "columns": [],
        "overlap": None,
        "can_change": knowledge_base_can_change(kb, request.user),
        "score_meanings": SCORE_MEANINGS,
    }
    status = 200
    if request.GET and form.is_valid():
        data = form.cleaned_data
        limit = data["limit"] or 10
        page = data["page"] or 1
        base = {
            "query": data["q"],
            "mode": data["mode"] or DEFAULT_MODE,
            "limit": limit,
            "offset": (page - 1) * limit,
            "fusion": data["fusion"] or DEFAULT_FUSION,
            "filters": form.filters(),
            "min_score": data["min_score"],
            "explain": True,
        }
        targets = [data["generation"]]
        if data["compare"] is not None:
            targets.append(data["compare"])
        try:
            outcomes = [
                knowledge_base_search(
                    kb=kb, params=SearchIn(**base, generation=number or "active").to_params()
                )
                for number in targets
            ]
        except PydanticError as exc:
            form.add_error(None, exc.errors()[0]["msg"])
            status = 422
        except RagStudioError as exc:
            form.add_error(None, exc.message)
            status = exc.status_code
        else:
            context["columns"] = outcomes
            context["query"] = data["q"]
            context["pages"] = _pages(request, page, limit, outcomes)
            if len(outcomes) == 2:
                context["overlap"] = _overlap(outcomes[0], outcomes[1])
            if data["set"] and knowledge_base_can_change(kb, request.user):
                marks = playground_marks(kb=kb, set_name=data["set"], query=data["q"])
                context["judge_set"] = data["set"]
                context["marks"] = {
                    hit.chunk_id: marks.get(
                        (hit.document_id, hit.citation.record_id or ""),
                        marks.get((hit.document_id, "")),
                    )
                    for outcome in outcomes
                    for hit in outcome.results
                }
    elif request.GET:
        status = 422
    template = "search/_results.html" if is_htmx(request) else "search/page.html"
    return render(request, template, context, status=status)


def _pages(
    request: HttpRequest, page: int, limit: int, outcomes: list[SearchOutcome]
) -> dict[str, Any]:
    """Links to the previous and next page of the same search (a full page may have a
    next one)."""

    def link(number: int) -> str:
        query = request.GET.copy()
        query["page"] = str(number)
        return "?" + query.urlencode()

    full = any(len(o.results) == limit for o in outcomes)
    return {
        "number": page,
        "first": (page - 1) * limit + 1,
        "previous": link(page - 1) if page > 1 else "",
        "next": link(page + 1) if full and page * limit < SEARCH_OFFSET.high else "",
    }


def _overlap(a: SearchOutcome, b: SearchOutcome, top: int = 10) -> dict[str, Any]:
    chunks_a = [h.chunk_id for h in a.results[:top]]
    chunks_b = {h.chunk_id for h in b.results[:top]}
    docs_a = {h.document_id for h in a.results[:top]}
    docs_b = {h.document_id for h in b.results[:top]}
    return {
        "top": top,
        "chunks": len(set(chunks_a) & chunks_b),
        "documents": len(docs_a & docs_b),
        "shared_ids": set(chunks_a) & chunks_b,
    }


# --- evaluation sets: the quality page, the playground's marks ---------------------------


def _quality_context(request: HttpRequest, kb: KnowledgeBase) -> dict[str, Any]:
    generations = list(generations_searchable(kb))
    sets = evaluation_sets_of(kb)
    rows = []
    live = False
    for evaluation_set in sets:
        runs = []
        for generation in generations:
            run = latest_run(evaluation_set, generation)
            attempt = latest_attempt(evaluation_set, generation)
            if attempt is not None and attempt.status == EvaluationRun.Status.SUCCEEDED:
                attempt = None  # the finished run is shown already
            live = live or (attempt is not None and attempt.status in EvaluationRun.LIVE)
            runs.append({"generation": generation, "run": run, "attempt": attempt})
        rows.append({"set": evaluation_set, "runs": runs})
    return {
        "live": live,
        "kb": kb,
        "kb_ref": knowledge_base_ref(kb, request.user),
        "sets": rows,
        "generations": generations,
        "gate": [(gate_label(k), v) for k, v in sorted((kb.quality_gate or {}).items())],
        "can_change": knowledge_base_can_change(kb, request.user),
        "import_form": EvalImportForm(),
        "metrics": [(m, METRIC_LABELS[m]) for m in METRICS],
        "modes": SEARCH_MODES,
    }


@login_required
def kb_quality(request: HttpRequest, slug: str) -> HttpResponse:
    """Evaluation sets, their runs per generation, and (``?set=&a=&b=``) the per-query
    differences between two generations with their top results side by side."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user)
    context = _quality_context(request, kb)
    if is_htmx(request) and request.GET.get("part") == "sets":
        return render(request, "search/_evalsets.html", context)
    status = 200
    name, a, b = request.GET.get("set"), request.GET.get("a"), request.GET.get("b")
    if name and a and b:
        try:
            context["comparison"] = _comparison(kb, name, a, b)
        except RagStudioError as exc:
            messages.error(request, exc.message)
            status = exc.status_code
    return render(request, "search/quality.html", context, status=status)


def _comparison(kb: KnowledgeBase, name: str, a: str, b: str) -> dict[str, Any]:
    if not (a.isdigit() and b.isdigit()):
        raise ValidationError("choose two generations to compare")
    evaluation_set = evaluation_set_get(kb=kb, name=name)
    return comparison_detail(kb=kb, evaluation_set=evaluation_set, numbers=(int(a), int(b)))


@login_required
@require_POST
def kb_quality_import(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    form = EvalImportForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            evaluation_set, result = evaluation_import(
                kb=kb,
                name=form.cleaned_data["name"],
                chunks=form.cleaned_data["file"].chunks(),
                user=request.user,
            )
        except RagStudioError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                f"Imported into {evaluation_set.name}: {result.queries_added} queries added, "
                f"{result.queries_updated} updated, {result.judgements} judgements.",
            )
    else:
        errors = "; ".join(f"{f}: {e[0]}" for f, e in form.errors.items())
        messages.error(request, f"Not imported: {errors}")
    return redirect("kb-quality", slug=knowledge_base_ref(kb, request.user))


@login_required
@require_POST
def kb_quality_run(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    """Queue an evaluation of one generation on a set; a worker measures it while the
    page shows its progress."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    number = request.POST.get("generation", "")
    try:
        if not number.isdigit():
            raise ValidationError("choose a generation to evaluate")
        evaluation_set = get_or_404(evaluation_set_get, kb=kb, name=name)
        generation = generation_get(kb=kb, number=int(number))
        run = evaluation_run_request(
            evaluation_set=evaluation_set, generation=generation, user=request.user
        )
    except RagStudioError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"Evaluating generation #{generation.number} on {name} ({run.queries} queries): "
            "the table shows its progress, then its numbers.",
        )
    return redirect("kb-quality", slug=knowledge_base_ref(kb, request.user))


@login_required
@require_POST
def kb_quality_delete(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    evaluation_set = get_or_404(evaluation_set_get, kb=kb, name=name)
    evaluation_set_delete(evaluation_set=evaluation_set)
    messages.success(request, f"Deleted the evaluation set {name}.")
    return redirect("kb-quality", slug=knowledge_base_ref(kb, request.user))


@login_required
@require_POST
def kb_judge(request: HttpRequest, slug: str) -> HttpResponse:
    """A playground result marked relevant (grade 1) or not (0) for the query, in the set
    named in the search form; answers with that result's buttons, now showing the mark."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    form = JudgeForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(f"{f}: {e[0]}" for f, e in form.errors.items())
        return HttpResponse(f"Not recorded: {errors}", status=422)
    data = form.cleaned_data
    try:
        mark = judgement_mark(
            kb=kb,
            set_name=data["set"],
            query=data["q"],
            document_id=data["document_id"],
            record_id=data["record_id"] or "",
            chunk_id=data["chunk_id"] or "",
            grade=data["grade"],
            user=request.user,
        )
    except RagStudioError as exc:
        return HttpResponse(f"Not recorded: {exc.message}", status=exc.status_code)
    context = {
        "kb_ref": knowledge_base_ref(kb, request.user),
        "judge_set": data["set"],
        "query": data["q"],
        "document_id": data["document_id"],
        "record_id": data["record_id"] or "",
        "chunk_id": data["chunk_id"] or "",
        "grade": mark.judgement.grade,
    }
    return render(request, "search/_judge.html", context)
