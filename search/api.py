from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from knowledge_bases.selectors import knowledge_base_get
from ragstudio.schemas import ERRORS
from search.schemas import SearchIn, SearchOut
from search.services import knowledge_base_search

router = Router(tags=["search"])


@router.post("/{slug}/search", response={200: SearchOut, **ERRORS})
def search(request: HttpRequest, slug: str, payload: SearchIn):  # type: ignore[no-untyped-def]
    """Search a knowledge base: `vector` (cosine, ANN above the size threshold), `lexical`
    (BM25 with English stemming) or `hybrid` (both at once, fused: RRF by default). 409
    when the KB has no active generation yet or the generation asked for was collected."""
    kb = knowledge_base_get(slug=slug, user=request.user)
    return knowledge_base_search(kb=kb, params=payload.to_params())
