"""The passages of one generation: one tantivy document each (title and the text of its
chunks), written with their first chunk, deleted with their document."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ragstudio.core.types import DocumentVersionKey, EmbeddedChunk
from search.ranking.filters import SearchFilter, metadata_tokens, versions_query
from search.stores.bm25._query import narrowed, plain_text_query
from search.stores.bm25._schema import PASSAGE_TITLE_BOOST, IndexFeatures, passage_schema
from search.stores.bm25._writer import delete_documents, open_or_create, write_batch


class PassageIndex:
    def __init__(self, path: Path, tokenizer: str = "en_stem") -> None:
        self.path = Path(path)
        self.tokenizer = tokenizer  # for an index built now; one on disk keeps its own
        self._index: Any = None
        self._versions: bool | None = None  # whether the index on disk records them

    def with_versions(self) -> bool:
        if self._versions is None:
            if not self.exists():
                return True  # built now, with today's schema
            self._versions = IndexFeatures.of(self.path).versions
        return self._versions

    def exists(self) -> bool:
        return (self.path / "meta.json").exists()

    def index(self) -> Any:
        if self._index is None:
            self._index = open_or_create(self.path, partial(passage_schema, self.tokenizer))
        return self._index

    def upsert(self, rows: Sequence[EmbeddedChunk]) -> None:
        import tantivy

        heads = [r for r in rows if r.chunk.parent_id and r.chunk.parent_text]
        if not heads:
            return
        index = self.index()
        versions = self.with_versions()
        with write_batch(index) as writer:
            for row in heads:
                chunk = row.chunk
                if not row.new:
                    writer.delete_documents_by_term("id", chunk.parent_id)
                fields: dict[str, Any] = {
                    "id": chunk.parent_id,
                    "document_id": chunk.document_id,
                    "title": chunk.title or "",
                    "text": chunk.parent_text,
                    "meta_kv": metadata_tokens(chunk.metadata),
                    "chunks": json.dumps(list(chunk.parent_chunks)).encode(),
                }
                if versions:
                    fields["version"] = chunk.version
                writer.add_document(tantivy.Document(**fields))

    def delete_documents(self, document_ids: Sequence[int]) -> None:
        if document_ids and self.exists():
            delete_documents(self.index(), document_ids)

    def delete_versions(self, keys: Sequence[DocumentVersionKey]) -> None:
        if not keys or not self.exists():
            return
        index = self.index()
        query = versions_query(keys, index.schema, with_versions=self.with_versions())
        with write_batch(index) as writer:
            writer.delete_documents_by_query(query)

    def count(self) -> int:
        if not self.exists():
            return 0
        index = self.index()
        index.reload()
        return int(index.searcher().num_docs)

    def stored(self) -> dict[str, tuple[str | None, list[str]]]:
        """Every passage: its id -> (its text, None where an index of an older release did
        not store it; its chunk ids in document order)."""
        import tantivy

        if not self.exists():
            return {}
        index = self.index()
        index.reload()
        searcher = index.searcher()
        out: dict[str, tuple[str | None, list[str]]] = {}
        if not searcher.num_docs:
            return out
        for _score, address in searcher.search(tantivy.Query.all_query(), searcher.num_docs).hits:
            doc = searcher.doc(address)
            text = doc.get_first("text")
            out[doc["id"][0]] = (text, json.loads(bytes(doc["chunks"][0])))
        return out

    def search_members(
        self, text: str, k: int, *, where: SearchFilter | None = None
    ) -> list[tuple[str, float, list[str]]]:
        """(passage id, BM25 score, its chunk ids) of the best ``k`` passages."""
        if not self.exists() or k <= 0:
            return []
        words = plain_text_query(text)
        if not words:
            return []
        index = self.index()
        query = index.parse_query(
            words, ["title", "text"], field_boosts={"title": PASSAGE_TITLE_BOOST}
        )
        index.reload()
        query = narrowed(query, where, index.schema, with_versions=self.with_versions())
        if query is None:
            return []
        searcher = index.searcher()
        out = []
        for score, address in searcher.search(query, k).hits:
            doc = searcher.doc(address)
            out.append((doc["id"][0], float(score), json.loads(bytes(doc["chunks"][0]))))
        return out
