from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import (
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)

from ragstudio.core.bounds import (
    EVAL_GRADE,
    EVAL_JUDGEMENTS_PER_QUERY,
    EVAL_QUERIES,
    GENERATION_NUMBER,
    QUERY_MAX_CHARS,
    ROW_ID,
    SEARCH_LIMIT,
    SEARCH_OFFSET,
)
from ragstudio.core.vocabulary import (
    DEFAULT_FUSION,
    DEFAULT_MODE,
    SCORE_MEANINGS,
    FusionMethod,
    SearchMode,
)
from ragstudio.schemas import JSON_INTEGER, JsonInt, json_number, within
from search.ranking.filters import SearchFilter
from search.ranking.fusion import FusionParams
from search.ranking.results import DocumentQuery, SearchParams

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
    document_ids: list[Annotated[int, within(ROW_ID), JSON_INTEGER]] = Field(
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
    document_name: str = Field(
        "",
        max_length=200,
        description="Only chunks of documents whose title or file name contains this "
        "(case-insensitive).",
    )
    uploaded_after: datetime | None = Field(
        None, description="Only documents uploaded at or after this time (ISO 8601)."
    )
    uploaded_before: datetime | None = Field(
        None, description="Only documents uploaded before this time (ISO 8601)."
    )


# A weight between 0 and 1 (a JSON number, never a string or a boolean).
Share = Annotated[float, Field(ge=0, le=1), BeforeValidator(json_number)]


class FusionIn(Schema):
    model_config = ConfigDict(extra="forbid")
    method: FusionMethod = DEFAULT_FUSION
    k: JsonInt = Field(60, ge=1, le=10_000, description="RRF constant: 1 / (k + rank).")
    vector_weight: Share = Field(0.5, description="weighted: vector share.")
    bm25_weight: Share = Field(0.5, description="weighted: BM25 share.")

    @model_validator(mode="after")
    def _weights(self) -> FusionIn:
        if self.method == "weighted" and self.vector_weight + self.bm25_weight <= 0:
            raise ValueError("vector_weight and bm25_weight cannot both be 0")
        return self


class SearchIn(Schema):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=QUERY_MAX_CHARS)
    mode: SearchMode = DEFAULT_MODE
    limit: JsonInt = Field(10, ge=SEARCH_LIMIT.low, le=SEARCH_LIMIT.high)
    offset: JsonInt = Field(0, ge=SEARCH_OFFSET.low, le=SEARCH_OFFSET.high)
    generation: Literal["active"] | Annotated[int, within(GENERATION_NUMBER), JSON_INTEGER] = Field(
        "active", description='"active", or a generation number (staging or archived).'
    )
    filters: FiltersIn | None = None
    fusion: FusionMethod | FusionIn = Field(
        default=DEFAULT_FUSION, description="Hybrid only: a method name or its parameters."
    )
    explain: StrictBool = False
    min_score: Annotated[float, BeforeValidator(json_number)] | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Leave out results scoring below this. A score means something else in "
        "each mode: " + "; ".join(f"{mode}: {text}" for mode, text in SCORE_MEANINGS.items()),
    )

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
        documents = DocumentQuery()
        if self.filters is not None:
            documents = DocumentQuery(
                name=self.filters.document_name.strip(),
                uploaded_after=_aware(self.filters.uploaded_after),
                uploaded_before=_aware(self.filters.uploaded_before),
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
            documents=documents,
            min_score=self.min_score,
        )


def _aware(moment: datetime | None) -> datetime | None:
    """A time given without a zone is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class CitationOut(Schema):
    document_id: int
    title: str
    filename: str
    chunk: int = Field(description="Position of the chunk in its document, from 1.")
    chunks: int = Field(description="Chunks in the document (0 if unknown).")
    page: int | None
    record_id: str | None = Field(
        default=None, description="The JSON Lines record of the chunk (null for other files)."
    )
    document_title: str = Field(
        default="",
        description="The document's title as the Documents tab shows it (`title` is the "
        "chunk's own: its record's or section's title, or else the document's).",
    )
    section: str | None = Field(
        default=None,
        description="The heading path of the chunk's section, e.g. `Installation > "
        "Requirements` (a slide's or sheet's name for those; null if the format has none).",
    )
    slide: int | None = Field(default=None, description="The slide (presentations), from 1.")
    sheet: str | None = Field(default=None, description="The sheet (spreadsheets).")
    rows: str | None = Field(
        default=None,
        description="The table rows the chunk holds, `first-last` (row numbers of the sheet "
        "or file; every chunk repeats the header row).",
    )
    ocr: bool = Field(default=False, description="The text was read from an image by OCR.")


class DocumentChunkOut(Schema):
    id: str
    number: int = Field(description="Position of the chunk in its document, from 1.")
    text: str = Field(description="As embedded and indexed (a table's chunk repeats its header).")
    tokens: int
    page: int | None
    record_id: str | None
    section: str | None = Field(description="The heading path of its section.")
    slide: int | None
    sheet: str | None
    rows: str | None = Field(description="The table rows it holds, `first-last`.")
    ocr: bool = Field(description="Read from an image by OCR.")
    metadata: dict[str, Any]


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


# --- evaluation sets ---------------------------------------------------------------------

EvalSetName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", max_length=64)
]
Target = (
    Annotated[int, within(ROW_ID), JSON_INTEGER]
    | Annotated[str, StringConstraints(min_length=1, max_length=700)]
)
Grade = Annotated[int, within(EVAL_GRADE), JSON_INTEGER]


class EvalQueryIn(Schema):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=QUERY_MAX_CHARS)
    relevant: list[Target] = Field(
        default_factory=list,
        max_length=EVAL_JUDGEMENTS_PER_QUERY.high,
        description="Documents that answer the query: ids, file names, or "
        '"file name#record id" for one record of a JSON Lines file (grade 1 unless '
        "`grades` says otherwise).",
    )
    grades: dict[Annotated[str, StringConstraints(max_length=700)], Grade] = Field(
        default_factory=dict,
        max_length=EVAL_JUDGEMENTS_PER_QUERY.high,
        description="Graded relevance by the same names (0: judged not relevant).",
    )
    id: str = Field(default="", max_length=200, description="Your id for the query.")


class EvalSetIn(Schema):
    model_config = ConfigDict(extra="forbid")
    name: EvalSetName
    description: str = Field(default="", max_length=10_000)
    queries: list[EvalQueryIn] = Field(default_factory=list, max_length=EVAL_QUERIES.high)


class EvalQueriesIn(Schema):
    model_config = ConfigDict(extra="forbid")
    queries: list[EvalQueryIn] = Field(min_length=1, max_length=EVAL_QUERIES.high)


class JudgementIn(Schema):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=QUERY_MAX_CHARS)
    document_id: JsonInt = Field(ge=ROW_ID.low, le=ROW_ID.high)
    record_id: str = Field(default="", max_length=200)
    chunk_id: str = Field(default="", max_length=64)
    grade: Grade = 1


class JudgementOut(Schema):
    document_id: int
    filename: str
    record_id: str
    grade: int
    source: str

    @staticmethod
    def resolve_filename(obj: Any) -> str:
        return obj.document.original_filename


class EvalQueryOut(Schema):
    id: int
    query: str
    external_id: str
    judgements: list[JudgementOut]

    @staticmethod
    def resolve_query(obj: Any) -> str:
        return obj.text

    @staticmethod
    def resolve_judgements(obj: Any) -> list[Any]:
        return list(obj.judgements.all())


class EvalSetOut(Schema):
    name: str
    description: str
    version: int
    queries: int = Field(description="Queries in the set.")
    judged: int = Field(description="Queries with at least one relevant document (measured).")
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_queries(obj: Any) -> int:
        return int(getattr(obj, "query_count", None) or obj.queries.count())

    @staticmethod
    def resolve_judged(obj: Any) -> int:
        found = getattr(obj, "judged_count", None)
        if found is not None:
            return int(found)
        return obj.queries.filter(judgements__grade__gt=0).distinct().count()


class EvalSetDetailOut(EvalSetOut):
    items: list[EvalQueryOut]

    @staticmethod
    def resolve_items(obj: Any) -> list[Any]:
        return list(obj.queries.prefetch_related("judgements__document"))


class EvalAddOut(Schema):
    evaluation_set: EvalSetOut
    queries_added: int
    queries_updated: int
    judgements: int


class EvalRunIn(Schema):
    model_config = ConfigDict(extra="forbid")
    generation: Literal["active"] | Annotated[int, within(GENERATION_NUMBER), JSON_INTEGER] = Field(
        "active", description='"active", or a generation number.'
    )


class EvalRunOut(Schema):
    id: int
    evaluation_set: str
    generation: int
    status: Literal["queued", "running", "succeeded", "failed"] = Field(
        description="Queued and running runs are measured by a worker; poll until "
        "succeeded or failed."
    )
    done: int = Field(description="Queries measured so far.")
    error: str = Field(description="Why a failed run failed.")
    set_version: int
    stale: bool = Field(description="The set changed since this run.")
    fusion: str
    queries: int
    metrics: dict[str, dict[str, float]] = Field(
        description='{"vector" | "lexical" | "hybrid": {"ndcg@10", "recall@10", "recall@100", '
        '"mrr"}}: means over the measured queries (empty until the run succeeds).'
    )
    seconds: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_error(obj: Any) -> str:
        return str(obj.error_message)

    @staticmethod
    def resolve_evaluation_set(obj: Any) -> str:
        return obj.evaluation_set.name

    @staticmethod
    def resolve_generation(obj: Any) -> int:
        return obj.generation.number

    @staticmethod
    def resolve_stale(obj: Any) -> bool:
        return bool(obj.set_version != obj.evaluation_set.version)


class EvalRunDetailOut(EvalRunOut):
    per_query: list[dict[str, Any]]


class QueryDeltaOut(Schema):
    query: str
    a: dict[str, Any]
    b: dict[str, Any]
    delta: float


class EvalCompareOut(Schema):
    a: EvalRunOut
    b: EvalRunOut
    mode: str
    metric: str
    better: list[QueryDeltaOut]
    worse: list[QueryDeltaOut]
    unchanged: int

    @staticmethod
    def resolve_a(obj: Any) -> Any:
        return obj.run_a

    @staticmethod
    def resolve_b(obj: Any) -> Any:
        return obj.run_b
