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
    document_ids: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, max_length=1000, description="Only chunks of these documents."
    )
    metadata: dict[MetaKey, MetaValue | InFilter] = Field(
        default_factory=dict,
        max_length=20,
        description='Metadata conditions, all of which must hold: `{"year": 2020}` '
        '(equality; on a list-valued key: contains) or `{"topic": {"in": ["a", "b"]}}`. '
        "Nested keys are dotted (`source.kind`).",
    )


class FusionIn(Schema):
    model_config = ConfigDict(extra="forbid")
    method: Literal["rrf", "weighted", "adaptive"] = "rrf"
    k: int = Field(60, ge=1, le=10_000, description="RRF constant: 1 / (k + rank).")
    vector_weight: float = Field(0.5, ge=0, le=1, description="weighted: vector share.")
    bm25_weight: float = Field(0.5, ge=0, le=1, description="weighted: BM25 share.")

    @model_validator(mode="after")
    def _weights(self) -> FusionIn:
        if self.method == "weighted" and self.vector_weight + self.bm25_weight <= 0:
            raise ValueError("vector_weight and bm25_weight cannot both be 0")
        return self


class SearchIn(Schema):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=2000)
    mode: Literal["vector", "lexical", "hybrid"] = "hybrid"
    limit: int = Field(10, ge=1, le=100)
    offset: int = Field(0, ge=0, le=10_000)
    generation: Literal["active"] | Annotated[int, Field(ge=1)] = Field(
        "active", description='"active", or a generation number (staging or archived).'
    )
    filters: FiltersIn | None = None
    fusion: Literal["rrf", "weighted", "adaptive"] | FusionIn = Field(
        default="rrf", description="Hybrid only: a method name or its parameters."
    )
    explain: bool = False

    @model_validator(mode="after")
    def _query_has_text(self) -> SearchIn:
        if not self.query.strip():
            raise ValueError("query must contain more than white space")
        return self


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
