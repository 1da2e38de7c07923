"""Numeric bounds on what users may ask for, defined once: the API schemas, the forms, the
services, the CLI and the settings all take their limits from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """An inclusive integer range for one named value."""

    name: str
    low: int
    high: int

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.name} must be between {self.low} and {self.high}"


STORE_BATCH_SIZE = Bound("store_batch_size", 1, 100_000)  # rows per LanceDB/tantivy write
EMBED_BATCH_SIZE = Bound("embed_batch_size", 1, 2048)  # texts per model call
CHUNK_SIZE = Bound("chunk_size", 16, 8000)  # tokens; an embedder may allow fewer
CHUNK_OVERLAP = Bound("chunk_overlap", 0, 4000)  # tokens; at most half the chunk size
# What a new knowledge base gets unless RAGSTUDIO_CHUNK_SIZE / _OVERLAP say otherwise.
# Chosen on SciFact's tuning half (bench/quality.py; docs/ranking.md has the sweep).
# Small chunks let the vector engine match the sentence or two a query is about; lexical
# ranking reads passages of consecutive chunks, so it keeps the context.
DEFAULT_CHUNK_SIZE = 96
DEFAULT_CHUNK_OVERLAP = 32
SEARCH_LIMIT = Bound("limit", 1, 100)
SEARCH_OFFSET = Bound("offset", 0, 10_000)
GENERATION_NUMBER = Bound("generation", 1, 10**9)
ROW_ID = Bound("id", 1, 2**63 - 1)  # database ids (BigAutoField) and LanceDB's int64
QUERY_MAX_CHARS = 2000
# Evaluation sets: a judgement's grade, sets per knowledge base, queries per set (each run
# searches them all),
# relevant units per query, and the size of an imported JSON Lines file.
SOURCE_SCHEDULE_MINUTES = Bound("schedule_minutes", 0, 7 * 24 * 60)  # a week at most
SOURCES_PER_KB = Bound("sources", 0, 20)
EVAL_GRADE = Bound("grade", 0, 10)
EVAL_SETS = Bound("evaluation sets", 0, 10)  # per knowledge base: the gate runs them all
# A page or API evaluation runs in the request: a set must fit well inside the web timeout
# (RAGSTUDIO_WEB_TIMEOUT) on a large knowledge base.
EVAL_QUERIES = Bound("queries", 1, 1000)
EVAL_JUDGEMENTS_PER_QUERY = Bound("relevant", 1, 1000)
EVAL_IMPORT_MAX_BYTES = 20 * 1024 * 1024
EVAL_LINE_MAX_BYTES = 256 * 1024
