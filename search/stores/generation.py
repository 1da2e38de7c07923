"""The pair of stores behind one generation, written together on every sink flush."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ingestion.pipeline.types import EmbeddedChunk, Vector
from search.stores.bm25_store import Bm25Index
from search.stores.lancedb_store import LanceChunkTable


class GenerationStore:
    def __init__(self, *, lancedb_uri: str, table_name: str, bm25_path: Path, dimensions: int):
        self.vectors = LanceChunkTable(lancedb_uri, table_name, dimensions)
        self.bm25 = Bm25Index(bm25_path)
        self.writes = 0

    def write(self, rows: Sequence[EmbeddedChunk]) -> None:
        # LanceDB first: a crash between the two leaves rows that the next (idempotent)
        # run rewrites to both; tantivy deletes by id before adding, so no duplicates.
        self.vectors.write(rows)
        self.bm25.upsert(rows)
        self.writes += 1

    def delete_documents(self, document_ids: Sequence[int]) -> None:
        self.vectors.delete_documents(document_ids)
        self.bm25.delete_documents(document_ids)

    def lookup(self, hashes: Sequence[str]) -> dict[str, Vector]:
        return self.vectors.lookup(hashes)

    def drop(self) -> None:
        self.vectors.drop()
        self.bm25.drop()


class CompositeCache:
    """Vectors by content hash from several stores, first match wins (the target first, so
    a resumed rebuild finds its own rows, then generations built by the same model)."""

    def __init__(self, stores: Sequence[GenerationStore]) -> None:
        self.stores = list(stores)

    def lookup(self, hashes: Sequence[str]) -> dict[str, Vector]:
        found: dict[str, Vector] = {}
        remaining = list(hashes)
        for store in self.stores:
            if not remaining:
                break
            found.update(store.lookup(remaining))
            remaining = [h for h in remaining if h not in found]
        return found
