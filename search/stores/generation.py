"""The pair of stores behind one generation, written together on every sink flush; where
a generation's files live; and the per-process cache of reader handles."""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ragstudio.core.types import DocumentVersionKey, EmbeddedChunk, Vector
from search.stores.bm25 import Bm25Index
from search.stores.lancedb_store import LanceChunkTable
from search.stores.objects import ObjectStore


@dataclass(frozen=True)
class StoreLocation:
    """Where one generation's LanceDB table and tantivy index live: the tantivy index on
    local disk (``bm25_path``), and, in a scaled-out installation, in the object store as
    well (``bm25_remote``, s3://...; the local copy is then a cache)."""

    lancedb_uri: str
    table_name: str
    bm25_path: Path
    dimensions: int
    storage_options: tuple[tuple[str, str], ...] = ()
    bm25_remote: str = ""
    language: str = "en"  # what its BM25 indexes stem for


class GenerationStore:
    def __init__(
        self,
        *,
        lancedb_uri: str,
        table_name: str,
        bm25_path: Path,
        dimensions: int,
        storage_options: tuple[tuple[str, str], ...] = (),
        bm25_remote: str = "",
        language: str = "en",
    ):
        self.vectors = LanceChunkTable(
            lancedb_uri, table_name, dimensions, storage_options=dict(storage_options)
        )
        remote = ObjectStore(bm25_remote, storage_options) if bm25_remote else None
        self.bm25 = Bm25Index(bm25_path, remote=remote, language=language)
        self.writes = 0

    @classmethod
    def open(cls, location: StoreLocation) -> GenerationStore:
        """A fresh store (writers, checks, GC): it sees the files as they are now."""
        return cls(
            lancedb_uri=location.lancedb_uri,
            table_name=location.table_name,
            bm25_path=location.bm25_path,
            dimensions=location.dimensions,
            storage_options=location.storage_options,
            bm25_remote=location.bm25_remote,
            language=location.language,
        )

    def write(self, rows: Sequence[EmbeddedChunk]) -> None:
        # LanceDB first: a crash between the two leaves rows that the next (idempotent)
        # run rewrites to both; tantivy deletes by id before adding, so no duplicates.
        self.vectors.write(rows)
        self.bm25.upsert(rows)
        self.writes += 1

    def delete_documents(self, document_ids: Sequence[int]) -> None:
        self.vectors.delete_documents(document_ids)
        self.bm25.delete_documents(document_ids)

    def delete_versions(self, keys: Sequence[DocumentVersionKey]) -> None:
        """Remove the rows of these document versions from both stores."""
        self.vectors.delete_versions(keys)
        self.bm25.delete_versions(keys)

    def supports_versions(self) -> bool:
        """Both stores tell a document's versions apart (those of an older release do not:
        a document there has one version at a time)."""
        return self.vectors.supports_versions() and self.bm25.features().versions

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


_READERS: OrderedDict[StoreLocation, GenerationStore] = OrderedDict()
_READERS_LOCK = threading.Lock()
READER_CACHE_SIZE = 32


def reader_store(location: StoreLocation) -> GenerationStore:
    """A long-lived store for searching one generation. Opening a table per request costs
    its index loads, several times a search's own work; handles see later writes (read
    consistency interval 0). Searches never
    reach a collected generation, so a handle is never used after its files are gone."""
    with _READERS_LOCK:
        store = _READERS.get(location)
        if store is not None:
            _READERS.move_to_end(location)
            return store
    store = GenerationStore.open(location)
    with _READERS_LOCK:
        store = _READERS.setdefault(location, store)
        while len(_READERS) > READER_CACHE_SIZE:
            _READERS.popitem(last=False)
    return store


def drop_files(
    *,
    lancedb_uri: str = "",
    table_name: str = "",
    path: str = "",
    remote: str = "",
    storage_options: tuple[tuple[str, str], ...] = (),
) -> None:
    """Remove a LanceDB table, a local directory and/or everything under an object-store
    prefix; what is already gone is no error."""
    if table_name:
        LanceChunkTable(
            lancedb_uri, table_name, dimensions=1, storage_options=dict(storage_options)
        ).drop()
    if path:
        shutil.rmtree(path, ignore_errors=True)
    if remote:
        ObjectStore(remote, storage_options).delete_tree()
