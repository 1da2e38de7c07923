"""The tantivy schemas of a generation's BM25 indexes, and which fields an index on disk
has: one built by an older release lacks the fields added since (``LATER_FIELDS``), and
``IndexFeatures`` says once what such an index can and cannot do."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def bm25_schema(tokenizer: str = "en_stem") -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("document_id", stored=True, indexed=True, fast=True)
    builder.add_text_field("title", stored=True, tokenizer_name=tokenizer)
    builder.add_text_field("text", stored=True, tokenizer_name=tokenizer)
    # Hashed metadata tokens for filters (search/ranking/filters.py), one value per token.
    builder.add_text_field("meta_kv", stored=False, tokenizer_name="raw", index_option="basic")
    # Stored only: with them a page of results is read from here by id, faster than a
    # LanceDB query.
    builder.add_integer_field("ordinal", stored=True, indexed=False)
    builder.add_integer_field("page", stored=True, indexed=False)
    builder.add_bytes_field("metadata", stored=True, indexed=False)
    # The chunk's passage (its id in the passages index), and its JSON Lines record.
    builder.add_text_field("parent", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("record_id", stored=True, tokenizer_name="raw", index_option="basic")
    # The document's version the chunk belongs to (absent: version 1).
    builder.add_integer_field("version", stored=True, indexed=True, fast=True)
    return builder.build()


def passage_schema(tokenizer: str = "en_stem") -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("document_id", stored=True, indexed=True, fast=True)
    builder.add_text_field("title", stored=False, tokenizer_name=tokenizer)
    # Stored so that a knowledge base's export carries its passages exactly (the chunks'
    # texts overlap, and a passage cannot be told from them alone).
    builder.add_text_field("text", stored=True, tokenizer_name=tokenizer)
    builder.add_text_field("meta_kv", stored=False, tokenizer_name="raw", index_option="basic")
    # Its chunks' ids in document order (JSON): a search reads them with the passage's id.
    builder.add_bytes_field("chunks", stored=True, indexed=False)
    builder.add_integer_field("version", stored=True, indexed=True, fast=True)
    return builder.build()


# Fields added after the first release; an index built before lacks them (see field_names).
LATER_FIELDS = frozenset(
    {"meta_kv", "ordinal", "page", "metadata", "parent", "record_id", "version"}
)
# How much a title counts against the text in passage scores. JSON Lines records lead
# their text with their title (so it counts twice at 1.0); for files it is the file name.
# Chosen on SciFact's tuning half (bench/quality.py; docs/ranking.md).
PASSAGE_TITLE_BOOST = 0.35


@dataclass(frozen=True)
class IndexFeatures:
    """What the chunks index on disk holds, read from its schema (an index's schema never
    changes, so this is read once)."""

    fields: frozenset[str]

    @classmethod
    def of(cls, path: Path) -> IndexFeatures:
        """Today's fields when there is no index yet (one will be built with them)."""
        meta = path / "meta.json"
        if not meta.exists():
            return cls(LATER_FIELDS)
        schema = json.loads(meta.read_text()).get("schema", [])
        return cls(frozenset(str(f.get("name")) for f in schema))

    @property
    def metadata_filters(self) -> bool:
        return "meta_kv" in self.fields

    @property
    def stored_rows(self) -> bool:
        """Whole rows stored: a page of results is read from here."""
        return "ordinal" in self.fields

    @property
    def passages(self) -> bool:
        return "parent" in self.fields

    @property
    def records(self) -> bool:
        return "record_id" in self.fields

    @property
    def versions(self) -> bool:
        return "version" in self.fields
