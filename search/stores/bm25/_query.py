"""Queries on the BM25 indexes: user text as plain words (never query syntax), the words
worth highlighting, and scored matches narrowed by a filter."""

from __future__ import annotations

import re
from typing import Any

from ragstudio.core.languages import CJK_TOKEN
from search.ranking.filters import SearchFilter

# Words, and each Chinese or Japanese character on its own: a run of them would be one
# query "word" that the index's analyser splits into a phrase, which must then match whole.
_WORD = re.compile(CJK_TOKEN, re.UNICODE)


def plain_text_query(text: str) -> str:
    """The words of ``text`` only, lower-cased: tantivy's query syntax (fields, quotes,
    ranges, AND/OR/NOT, +/-) cannot appear, so no user text is interpreted as syntax."""
    return " ".join(_WORD.findall(text.lower()))


_highlight_analyzer: Any = None


def highlight_words(text: str) -> str:
    """The query's words worth marking in a snippet: without English stop words ("the",
    "in", "and"), which occur in every passage and would be marked everywhere and pull the
    fragment towards themselves; all of them when nothing else is left."""
    global _highlight_analyzer
    import tantivy

    if _highlight_analyzer is None:
        _highlight_analyzer = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stopword("english"))
            .build()
        )
    words = plain_text_query(text)
    return " ".join(_highlight_analyzer.analyze(words)) or words


def narrowed(
    query: Any, where: SearchFilter | None, schema: Any, *, with_versions: bool = True
) -> Any | None:
    """``query`` restricted by ``where`` (None: the filter matches nothing)."""
    import tantivy

    if where is None or where.empty:
        return query
    if where.impossible():
        return None
    narrowing = where.tantivy_query(schema, with_versions=with_versions)
    assert narrowing is not None  # a non-empty filter has clauses
    return tantivy.Query.boolean_query(
        [(tantivy.Occur.Must, query), (tantivy.Occur.Must, narrowing)]
    )


def scored(
    index: Any, query: Any | None, k: int, where: SearchFilter | None, *, with_versions: bool
) -> list[tuple[str, float]]:
    """(id, score) of the best ``k`` matches of ``query`` narrowed by ``where``."""
    if query is None:
        return []
    index.reload()
    query = narrowed(query, where, index.schema, with_versions=with_versions)
    if query is None:
        return []
    searcher = index.searcher()
    return [
        (searcher.doc(address)["id"][0], float(score))
        for score, address in searcher.search(query, k).hits
    ]
