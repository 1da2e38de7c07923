"""One generation's BM25 index in a tantivy directory (English stemming; the chunk id is a
raw-tokenized field, so upserts can delete by exact term)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingestion.pipeline.types import EmbeddedChunk

WRITER_HEAP_BYTES = 64 * 1024 * 1024


def bm25_schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("document_id", stored=True, indexed=True, fast=True)
    builder.add_text_field("title", stored=True, tokenizer_name="en_stem")
    builder.add_text_field("text", stored=True, tokenizer_name="en_stem")
    return builder.build()


class Bm25Index:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index: Any = None

    def exists(self) -> bool:
        return (self.path / "meta.json").exists()

    def index(self) -> Any:
        import tantivy

        if self._index is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._index = tantivy.Index(bm25_schema(), path=str(self.path))
        return self._index

    def upsert(self, rows: Sequence[EmbeddedChunk]) -> None:
        import tantivy

        if not rows:
            return
        # One writer per flush: tantivy allows one writer per index across processes, and
        # holding it only for a flush lets other processes write between our flushes.
        writer = self.index().writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
        try:
            for row in rows:
                chunk = row.chunk
                if not row.new:
                    writer.delete_documents_by_term("id", chunk.id)
                writer.add_document(
                    tantivy.Document(
                        id=chunk.id,
                        document_id=chunk.document_id,
                        title=chunk.title or "",
                        text=chunk.text,
                    )
                )
            writer.commit()
        except BaseException:
            writer.rollback()
            raise
        finally:
            writer.wait_merging_threads()
        self.index().reload()

    def delete_documents(self, document_ids: Sequence[int]) -> None:
        if not document_ids or not self.exists():
            return
        writer = self.index().writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
        try:
            for doc in document_ids:
                writer.delete_documents_by_term("document_id", int(doc))
            writer.commit()
        finally:
            writer.wait_merging_threads()
        self.index().reload()

    def count(self) -> int:
        if not self.exists():
            return 0
        index = self.index()
        index.reload()
        return int(index.searcher().num_docs)

    def ids(self) -> set[str]:
        import tantivy

        if not self.exists():
            return set()
        index = self.index()
        index.reload()
        searcher = index.searcher()
        if searcher.num_docs == 0:
            return set()
        hits = searcher.search(tantivy.Query.all_query(), limit=searcher.num_docs).hits
        return {searcher.doc(address)["id"][0] for _, address in hits}

    def search(self, text: str, k: int = 10) -> list[str]:
        """Ids of the best BM25 matches for plain text (query syntax is not interpreted)."""
        if not self.exists() or not text.strip():
            return []
        index = self.index()
        index.reload()
        query, _errors = index.parse_query_lenient(text, ["title", "text"])
        searcher = index.searcher()
        return [searcher.doc(address)["id"][0] for _, address in searcher.search(query, k).hits]

    def drop(self) -> None:
        self._index = None
        shutil.rmtree(self.path, ignore_errors=True)
