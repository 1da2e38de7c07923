"""The words of the search API, defined once: the schema, the playground form, the CLI and
the service take them from here."""

from __future__ import annotations

from typing import Literal, get_args

SearchMode = Literal["hybrid", "vector", "lexical"]
SEARCH_MODES: tuple[SearchMode, ...] = get_args(SearchMode)
MODE_LABELS: dict[str, str] = {"hybrid": "Hybrid", "vector": "Vector", "lexical": "Lexical (BM25)"}
DEFAULT_MODE: SearchMode = "hybrid"
# What a result's score is in each mode: what a minimum score means.
SCORE_MEANINGS: dict[str, str] = {
    "vector": "cosine similarity of the chunk to the query, from -1 to 1 (related text "
    "scores about 0.3 and up with the local model)",
    "lexical": "BM25: grows with how many of the query's rarer words the chunk holds; no "
    "upper bound, comparable only within one knowledge base",
    "hybrid": "the fused score: with z-score fusion, how far above each engine's average for "
    "this query the chunk stands, in standard deviations, weighted (about 1 and up stands "
    "out); with RRF a sum of 1 / (k + rank)",
}

FusionMethod = Literal["zscore", "rrf", "weighted", "adaptive"]
FUSION_METHODS: tuple[FusionMethod, ...] = get_args(FusionMethod)
FUSION_LABELS: dict[str, str] = {
    "zscore": "Z-score",
    "rrf": "RRF",
    "weighted": "Weighted",
    "adaptive": "Adaptive",
}
# Chosen on SciFact's tuning half, reported on the other (docs/ranking.md).
DEFAULT_FUSION: FusionMethod = "zscore"

# Retrieval metrics of an evaluation run (search/ranking/metrics.py computes them).
MetricName = Literal["ndcg@10", "recall@10", "recall@100", "mrr"]
METRICS: tuple[MetricName, ...] = get_args(MetricName)
METRIC_LABELS: dict[str, str] = {
    "ndcg@10": "nDCG@10",
    "recall@10": "recall@10",
    "recall@100": "recall@100",
    "mrr": "MRR",
}

# The quality gate of a knowledge base: "mode:metric" -> the largest fall allowed between
# the active generation and a new one, on every evaluation set. The default: hybrid
# nDCG@10 may not drop by more than 0.01.
DEFAULT_QUALITY_GATE: dict[str, float] = {"hybrid:ndcg@10": 0.01}
GATE_KEYS: tuple[str, ...] = tuple(
    f"{mode}:{metric}" for mode in SEARCH_MODES for metric in METRICS
)


def gate_label(key: str) -> str:
    """ "hybrid:ndcg@10" -> "hybrid nDCG@10"."""
    mode, _, metric = key.partition(":")
    return f"{mode} {METRIC_LABELS.get(metric, metric)}"


def quality_gate_problems(gate: object) -> list[str]:
    """Why a quality gate setting is not valid (empty when it is): a JSON object of
    "mode:metric" keys to numbers between 0 and 1."""
    if not isinstance(gate, dict):
        return ['the quality gate must be an object of "mode:metric": largest drop']
    problems = []
    for key, value in gate.items():
        if key not in GATE_KEYS:
            problems.append(f"unknown metric {key!r} (one of {', '.join(GATE_KEYS)})")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            problems.append(f"{key}: the largest drop allowed must be a number from 0 to 1")
    return problems


# Kinds of sources a knowledge base keeps itself in sync with (ingestion.connectors).
SourceKind = Literal["folder", "s3", "web", "git"]
SOURCE_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)
SOURCE_KIND_LABELS: dict[str, str] = {
    "folder": "A folder on the server",
    "s3": "An S3 prefix (AWS, MinIO, Ceph)",
    "web": "Web pages or a sitemap",
    "git": "A Git repository",
}
