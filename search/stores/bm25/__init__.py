"""One generation's BM25 indexes (tantivy): chunks and passages.

- ``_schema``: the schemas, and what an index on disk holds (``IndexFeatures``);
- ``_writer``: ``write_batch``, the one writer context every write goes through;
- ``_query``: user text as plain words, highlight words, filtered scoring;
- ``index`` / ``passages``: the two indexes."""

from search.stores.bm25._query import highlight_words, plain_text_query
from search.stores.bm25._schema import (
    LATER_FIELDS,
    PASSAGE_TITLE_BOOST,
    IndexFeatures,
    bm25_schema,
    passage_schema,
)
from search.stores.bm25._writer import write_batch
from search.stores.bm25.index import Bm25Index
from search.stores.bm25.passages import PassageIndex

__all__ = [
    "LATER_FIELDS",
    "PASSAGE_TITLE_BOOST",
    "Bm25Index",
    "IndexFeatures",
    "PassageIndex",
    "bm25_schema",
    "highlight_words",
    "passage_schema",
    "plain_text_query",
    "write_batch",
]
