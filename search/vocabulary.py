"""The words of the search API, defined once: the schema, the playground form, the CLI and
the service take them from here."""

from __future__ import annotations

from typing import Literal, get_args

SearchMode = Literal["hybrid", "vector", "lexical"]
SEARCH_MODES: tuple[SearchMode, ...] = get_args(SearchMode)
MODE_LABELS: dict[str, str] = {"hybrid": "Hybrid", "vector": "Vector", "lexical": "Lexical (BM25)"}
DEFAULT_MODE: SearchMode = "hybrid"

FusionMethod = Literal["rrf", "weighted", "adaptive"]
FUSION_METHODS: tuple[FusionMethod, ...] = get_args(FusionMethod)
FUSION_LABELS: dict[str, str] = {"rrf": "RRF", "weighted": "Weighted", "adaptive": "Adaptive"}
DEFAULT_FUSION: FusionMethod = "rrf"
