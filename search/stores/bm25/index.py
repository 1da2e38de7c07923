"""One generation's BM25 indexes in a tantivy directory (stemmed for the generation's
language, English unless it says otherwise; ids are
raw-tokenized fields, so upserts can delete by exact term): one of chunks, and beside it
(``passages/``) one of passages, the consecutive chunks of a section scored whole
(``ingestion/pipeline/chunk.py``). Lexical ranking scores passages and hands their score
to their chunks; an index built before passages existed ranks chunks alone."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ragstudio.core import languages
from ragstudio.core.types import Chunk, DocumentVersionKey, EmbeddedChunk
from search.ranking.filters import SearchFilter, metadata_tokens, versions_query
from search.ranking.snippets import Highlight
from search.stores.bm25._query import highlight_words, plain_text_query, scored
from search.stores.bm25._schema import IndexFeatures, bm25_schema
from search.stores.bm25._writer import delete_documents, open_or_create, write_batch
from search.stores.bm25.passages import PassageIndex
from search.stores.bm25.replica import Bm25Replica
from search.stores.objects import ObjectStore


class Bm25Index:
    def __init__(
        self, path: Path, remote: ObjectStore | None = None, *, language: str = "en"
    ) -> None:
        self.path = Path(path)
        # The analyser of an index built now (a language's stemmer); one on disk keeps the
        # one it was built with, named in its schema.
        self.tokenizer = languages.tokenizer_name(language)
        self._index: Any = None
        self._features: IndexFeatures | None = None  # of the index on disk, once it exists
        self._passages: PassageIndex | None = None
        # Shared through the object store (hosts keep ``path`` as a cache), or local only.
        self.replica = Bm25Replica(self.path, remote) if remote is not None else None
        self._sync_before_use = False

    def sync_before_use(self) -> None:
        """Sync with the store's newest version at the first use (a store opened only for
        its vectors never downloads its BM25 files)."""
        self._sync_before_use = self.replica is not None

    def _catch_up(self) -> None:
        if self._sync_before_use:
            self._sync_before_use = False
            self.sync()

    def sync(self, min_version: int | None = None) -> None:
        """With an object store: bring the local copy up to ``min_version`` (the version the
        database says is published; None: the store's newest). Nothing otherwise."""
        if self.replica is not None and self.replica.sync(min_version):
            # New metas on disk: the next use reopens the indexes and their schema.
            self._index = None
            self._features = None
            self._passages = None

    def _publish(self) -> None:
        if self.replica is not None:
            self.replica.publish()

    def exists(self) -> bool:
        self._catch_up()
        return (self.path / "meta.json").exists()

    def index(self) -> Any:
        self._catch_up()
        if self._index is None:
            # An index from an older release opens with the schema it was built with, and
            # keeps working for search and upserts.
            self._index = open_or_create(self.path, partial(bm25_schema, self.tokenizer))
        return self._index

    def features(self) -> IndexFeatures:
        """What the index on disk holds (older releases built fewer fields)."""
        self._catch_up()
        if self._features is None:
            features = IndexFeatures.of(self.path)
            if not self.exists():
                return features  # today's, for the index about to be built
            self._features = features
        return self._features

    def supports_metadata_filters(self) -> bool:
        """False for an index built before metadata tokens were indexed."""
        return self.features().metadata_filters

    def upsert(self, rows: Sequence[EmbeddedChunk]) -> None:
        if not rows:
            return
        self.sync()  # another host may have written since (a job moves between workers)
        features = self.features()
        with write_batch(self.index()) as writer:
            for row in rows:
                if not row.new:
                    writer.delete_documents_by_term("id", row.chunk.id)
                writer.add_document(_document(row.chunk, features))
        # Passages after their chunks: a crash between the two leaves chunks whose
        # passage is missing (ranked by their own score) until the rerun writes it.
        if features.passages:
            self.passages.upsert(rows)
        self._publish()

    @property
    def passages(self) -> PassageIndex:
        self._catch_up()
        if self._passages is None:
            self._passages = PassageIndex(self.path / "passages", self.tokenizer)
        return self._passages

    def has_passages(self) -> bool:
        """False for an index built before passages existed (or still empty)."""
        return self.features().passages and self.passages.exists()

    def delete_versions(self, keys: Sequence[DocumentVersionKey]) -> None:
        """Remove the chunks and passages of these document versions."""
        if not keys:
            return
        self.sync()
        if not self.exists():
            return
        index = self.index()
        query = versions_query(keys, index.schema, with_versions=self.features().versions)
        with write_batch(index) as writer:
            writer.delete_documents_by_query(query)
        self.passages.delete_versions(keys)
        self._publish()

    def delete_documents(self, document_ids: Sequence[int]) -> None:
        if not document_ids:
            return
        self.sync()
        if not self.exists():
            return
        delete_documents(self.index(), document_ids)
        self.passages.delete_documents(document_ids)
        self._publish()

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
        return [chunk_id for chunk_id, _ in self.search_scored(text, k)]

    def text_query(self, text: str) -> Any | None:
        words = plain_text_query(text)
        if not words:
            return None
        return self.index().parse_query(words, ["title", "text"])

    def search_scored(
        self, text: str, k: int = 10, *, where: SearchFilter | None = None
    ) -> list[tuple[str, float]]:
        """(id, BM25 score) of the best matches for plain text, title and text fields,
        English stemming; ``where`` narrows them with term queries."""
        if not self.exists() or k <= 0:
            return []
        return scored(
            self.index(), self.text_query(text), k, where, with_versions=self.features().versions
        )

    def passage_ranking(
        self,
        text: str,
        k: int,
        *,
        where: SearchFilter | None = None,
        order_within: int = 0,
    ) -> list[tuple[str, float, str]]:
        """(chunk id, its passage's BM25 score, passage id) for the chunks of the best
        ``k`` passages, best passage first, each passage's chunks in document order; in
        the first ``order_within`` passages (a page's worth) by their own BM25 score
        first. Empty when there is no passages index."""
        if not self.has_passages() or k <= 0:
            return []
        passages = self.passages.search_members(text, k, where=where)
        if not passages:
            return []
        own = self._own_scores(text, [p for p, _, _ in passages[:order_within]])
        out: list[tuple[str, float, str]] = []
        for number, (passage, score, chunks) in enumerate(passages):
            if number < order_within:
                chunks = sorted(chunks, key=lambda c: -own.get(c, 0.0))  # stable: ties in order
            out.extend((chunk, score, passage) for chunk in chunks)
        return out

    def _own_scores(self, text: str, passages: Sequence[str]) -> dict[str, float]:
        """Each matching chunk's own BM25 score, among these passages' chunks."""
        import tantivy

        words = self.text_query(text) if passages else None
        if words is None:
            return {}
        index = self.index()
        index.reload()  # after the passages': a passage seen has its chunks written
        # The few member chunks drive the query (constant score 1 each); the words only
        # add their BM25 to those, instead of being intersected across the whole index.
        members = tantivy.Query.term_set_query(index.schema, "parent", list(passages))
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, members), (tantivy.Occur.Should, words)]
        )
        searcher = index.searcher()
        return {
            searcher.doc(address)["id"][0]: float(score) - 1.0
            for score, address in searcher.search(query, 64 * len(passages), count=False).hits
        }

    def _stored(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The stored fields of these chunk ids."""
        import tantivy

        wanted = list(dict.fromkeys(ids))
        if not wanted or not self.exists():
            return []
        index = self.index()
        query = tantivy.Query.term_set_query(index.schema, "id", wanted)
        searcher = index.searcher()
        hits = searcher.search(query, len(wanted) * 2, count=False).hits
        return [searcher.doc(address).to_dict() for _score, address in hits]

    def parents(self, ids: Sequence[str]) -> dict[str, str]:
        """The passage of each of these chunks (none from an index without passages)."""
        if not self.features().passages:
            return {}
        return {doc["id"][0]: doc["parent"][0] for doc in self._stored(ids) if doc.get("parent")}

    def rows(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored rows of these chunk ids (fields as in LanceDB, vectors aside); none
        from an index of an older release that did not store them all."""
        if not self.features().stored_rows:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for doc in self._stored(ids):
            page = doc.get("page") or [None]
            metadata = doc.get("metadata") or [b"{}"]
            out[doc["id"][0]] = {
                "id": doc["id"][0],
                "document_id": doc["document_id"][0],
                "ordinal": (doc.get("ordinal") or [0])[0],
                "text": doc["text"][0],
                "title": (doc.get("title") or [""])[0],
                "page": page[0],
                "metadata": bytes(metadata[0]).decode(),
                "record_id": (doc.get("record_id") or [None])[0],
            }
        return out

    def highlights(
        self, text: str, contents: dict[str, str], max_chars: int
    ) -> dict[str, Highlight]:
        """For each content the query's (stemmed) terms occur in: a fragment of at most
        ``max_chars`` around them, and where they are in it (rendered by the caller)."""
        import tantivy

        query = self.text_query(highlight_words(text)) if self.exists() else None
        if query is None:
            return {}
        index = self.index()
        generator = tantivy.SnippetGenerator.create(index.searcher(), query, index.schema, "text")
        generator.set_max_num_chars(max_chars)
        out: dict[str, Highlight] = {}
        for key, content in contents.items():
            snippet = generator.snippet_from_doc(tantivy.Document(text=content))
            ranges = tuple((r.start, r.end) for r in snippet.highlighted())
            if ranges:
                out[key] = Highlight(snippet.fragment(), ranges)
        return out

    def drop(self) -> None:
        """Delete the index: the local copy, and the store's when there is one."""
        self._sync_before_use = False
        self._index = None
        self._features = None
        self._passages = None
        shutil.rmtree(self.path, ignore_errors=True)
        if self.replica is not None:
            self.replica.remote.delete_tree()


def _document(chunk: Chunk, features: IndexFeatures) -> Any:
    """A chunk as the index stores it (an index of an older release gets its own fields)."""
    import tantivy

    fields: dict[str, Any] = {
        "id": chunk.id,
        "document_id": chunk.document_id,
        "title": chunk.title or "",
        "text": chunk.text,
    }
    if features.metadata_filters:
        fields["meta_kv"] = metadata_tokens(chunk.metadata)
    if features.stored_rows:
        fields["ordinal"] = chunk.ordinal
        if chunk.page is not None:
            fields["page"] = chunk.page
        fields["metadata"] = chunk.metadata_json().encode()
    if features.passages and chunk.parent_id:
        fields["parent"] = chunk.parent_id
    if features.records and chunk.record_id is not None:
        fields["record_id"] = chunk.record_id
    if features.versions:
        fields["version"] = chunk.version
    return tantivy.Document(**fields)
