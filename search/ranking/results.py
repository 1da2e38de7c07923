"""What a search asks and answers: plain data, shared by the service and its surfaces."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ragstudio.core.vocabulary import DEFAULT_MODE, SearchMode
from search.ranking.filters import SearchFilter
from search.ranking.fusion import FusionParams
from search.ranking.predicates import Predicate


@dataclass(frozen=True)
class DocumentQuery:
    """Documents chosen by what the database knows of them (the service turns them into
    document ids): a name or title containing ``name``, uploaded within the dates."""

    name: str = ""
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None

    def __bool__(self) -> bool:
        return bool(self.name or self.uploaded_after or self.uploaded_before)


@dataclass(frozen=True)
class SearchParams:
    query: str
    mode: SearchMode = DEFAULT_MODE
    limit: int = 10
    offset: int = 0
    generation: int | None = None  # None: the active one
    filter: SearchFilter = field(default_factory=SearchFilter)
    fusion: FusionParams = field(default_factory=FusionParams)
    explain: bool = False
    documents: DocumentQuery = field(default_factory=DocumentQuery)
    # Hits scoring below this are left out (the score of the mode: see SCORE_MEANINGS).
    min_score: float | None = None
    # Conditions on chunk metadata the engines cannot index, checked on the candidates.
    predicate: Predicate | None = None


@dataclass(frozen=True)
class Citation:
    document_id: int
    title: str
    filename: str
    chunk: int  # 1-based position of the chunk in its document
    chunks: int  # how many chunks the document has (0: unknown)
    page: int | None
    record_id: str | None = None  # the JSON Lines record the chunk comes from
    document_title: str = ""  # the document's title, as its page and the Documents tab say
    # Where in the document, where its format says: the heading path, the slide, the sheet
    # and its rows, whether the text was read by OCR.
    section: str | None = None
    slide: int | None = None
    sheet: str | None = None
    rows: str | None = None
    ocr: bool = False


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    document_id: int
    score: float
    content: str
    snippet: str
    metadata: dict[str, Any]
    citation: Citation
    explain: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchOutcome:
    knowledge_base: str
    generation: int
    mode: str
    fusion: str | None
    results: list[SearchHit]
    took_ms: float
    timings: dict[str, float]
    exact_vector_search: bool | None  # None: no vector search ran (lexical, or no hits)
