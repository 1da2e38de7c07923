from __future__ import annotations

from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import (
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)

from ragstudio.bounds import (
    GENERATION_NUMBER,
    QUERY_MAX_CHARS,
    ROW_ID,
    SEARCH_LIMIT,
    SEARCH_OFFSET,
)
from ragstudio.schemas import JsonInt
from search.filters import SearchFilter
from search.fusion import FusionParams
from search.results import SearchParams
from search.vocabulary import DEFAULT_FUSION, DEFAULT_MODE, FusionMethod, SearchMode

MetaKey = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$", max_length=64)
]
MetaValue = StrictBool | StrictInt | StrictFloat | Annotated[str, StringConstraints(max_length=500)]


class InFilter(Schema):
    """`{"in": [v1, v2]}`: the key equals one of the values."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    values: list[MetaValue] = Field(alias="in", min_length=1, max_length=100)


class FiltersIn(Schema):
    model_config = ConfigDict(extra="forbid")
    document_ids: list[Annotated[JsonInt, Field(ge=ROW_ID.low, le=ROW_ID.high)]] = Field(
        default_factory=list, max_length=1000, description="Only chunks of these documents."
    )
    metadata: dict[MetaKey, MetaValue | InFilter] = Field(
        default_factory=dict,
        max_length=20,
        description='Metadata conditions, all of which must hold: `{"year": 2020}` '
        '(equality; on a list-valued key: contains) or `{"topic": {"in": ["a", "b"]}}`. '
        "Nested keys are dotted (`source.kind`).",
        # Keys that miss the pattern are invalid, as the schema must say.
        json_schema_extra={"additionalProperties": False},
    )


class FusionIn(Schema):
    model_config = ConfigDict(extra="forbid")
    method: FusionMethod = DEFAULT_FUSION
    k: JsonInt = Field(60, ge=1, le=10_000, description="RRF constant: 1 / (k + rank).")
    vector_weight: float = Field(0.5, ge=0, le=1, description="weighted: vector share.")
    bm25_weight: float = Field(0.5, ge=0, le=1, description="weighted: BM25 share.")

    @model_validator(mode="after")
    def _weights(self) -> FusionIn:
        if self.method == "weighted" and self.vector_weight + self.bm25_weight <= 0:
            raise ValueError("vector_weight and bm25_weight cannot both be 0")
        return self


class SearchIn(Schema):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=QUERY_MAX_CHARS)
    mode: SearchMode = DEFAULT_MODE
    limit: int = Field(10, ge=SEARCH_LIMIT.low, le=SEARCH_LIMIT.high)
    offset: int = Field(0, ge=SEARCH_OFFSET.low, le=SEARCH_OFFSET.high)
    generation: (
        Literal["active"]
        | Annotated[int, Field(ge=GENERATION_NUMBER.low, le=GENERATION_NUMBER.high)]
    ) = Field("active", description='"active", or a generation number (staging or archived).')
    filters: FiltersIn | None = None
    fusion: FusionMethod | FusionIn = Field(
        default=DEFAULT_FUSION, description="Hybrid only: a method name or its parameters."
    )
    explain: StrictBool = False

    @model_validator(mode="after")
    def _query_has_text(self) -> SearchIn:
        if not self.query.strip():
            raise ValueError("query must contain more than white space")
        return self

    def to_params(self) -> SearchParams:
        """The service's parameters: the API, the CLI and the playground all search
        through this one conversion."""
        fusion = self.fusion
        if isinstance(fusion, FusionIn):
            fusion_params = FusionParams(
                method=fusion.method,
                k=fusion.k,
                vector_weight=fusion.vector_weight,
                bm25_weight=fusion.bm25_weight,
            )
        else:
            fusion_params = FusionParams(method=fusion)
        search_filter = SearchFilter()
        if self.filters is not None:
            metadata = {
                key: value.values if isinstance(value, InFilter) else value
                for key, value in self.filters.metadata.items()
            }
            search_filter = SearchFilter.build(
                document_ids=self.filters.document_ids, metadata=metadata
            )
        return SearchParams(
            query=self.query,
            mode=self.mode,
            limit=self.limit,
            offset=self.offset,
            generation=None if self.generation == "active" else int(self.generation),
            filter=search_filter,
            fusion=fusion_params,
            explain=self.explain,
        )


class CitationOut(Schema):
    document_id: int
    title: str
    filename: str
    chunk: int = Field(description="Position of the chunk in its document, from 1.")
    chunks: int = Field(description="Chunks in the document (0 if unknown).")
    page: int | None


class ExplainOut(Schema):
    rank: int
    vector_score: float | None = Field(description="Cosine similarity.")
    vector_rank: int | None
    bm25_score: float | None
    bm25_rank: int | None


class SearchResultOut(Schema):
    chunk_id: str
    document_id: int
    score: float
    content: str
    snippet: str = Field(description="HTML-escaped text with the query terms in <mark>.")
    metadata: dict[str, Any]
    citation: CitationOut
    explain: ExplainOut | None = None


class SearchOut(Schema):
    knowledge_base: str
    generation: int
    mode: str
    fusion: str | None
    took_ms: float
    timings: dict[str, float]
    exact_vector_search: bool | None = Field(
        description="Whether vectors were compared exactly (no ANN index, or a selective "
        "filter); null when no vector search ran."
    )
    results: list[SearchResultOut]
