"""The search playground: one generation's results, or two side by side."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from pydantic import ValidationError as PydanticError

from knowledge_bases.models import Generation
from knowledge_bases.selectors import knowledge_base_get, knowledge_base_ref
from ragstudio.errors import RagStudioError
from ragstudio.views import get_or_404, is_htmx
from search.forms import SearchForm
from search.results import SearchOutcome
from search.schemas import SearchIn
from search.services import knowledge_base_search
from search.vocabulary import DEFAULT_FUSION, DEFAULT_MODE


@login_required
def kb_search(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user)
    numbers = list(
        kb.generations.filter(status__in=Generation.SEARCHABLE)
        .order_by("-number")
        .values_list("number", flat=True)
    )
    form = SearchForm(request.GET or None, numbers=numbers)
    context: dict[str, Any] = {
        "kb": kb,
        "kb_ref": knowledge_base_ref(kb, request.user),
        "form": form,
        "columns": [],
        "overlap": None,
    }
    status = 200
    if request.GET and form.is_valid():
        data = form.cleaned_data
        base = {
            "query": data["q"],
            "mode": data["mode"] or DEFAULT_MODE,
            "limit": data["limit"] or 10,
            "fusion": data["fusion"] or DEFAULT_FUSION,
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
            if len(outcomes) == 2:
                context["overlap"] = _overlap(outcomes[0], outcomes[1])
    elif request.GET:
        status = 422
    template = "search/_results.html" if is_htmx(request) else "search/page.html"
    return render(request, template, context, status=status)


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
