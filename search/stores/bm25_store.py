"""One generation's BM25 indexes in a tantivy directory (English stemming; ids are
raw-tokenized fields, so upserts can delete by exact term): one of chunks, and beside it
(``passages/``) one of passages, the consecutive chunks of a section scored whole
(``ingestion/pipeline/chunk.py``). Lexical ranking scores passages and hands their score
to their chunks; an index built before passages existed ranks chunks alone."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingestion.pipeline.types import EmbeddedChunk
from search.filters import SearchFilter, metadata_tokens
from search.stores.bm25_replica import Bm25Replica
from search.stores.objects import ObjectStore

WRITER_HEAP_BYTES = 64 * 1024 * 1024


def bm25_schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("document_id", stored=True, indexed=True, fast=True)
    builder.add_text_field("title", stored=True, tokenizer_name="en_stem")
    builder.add_text_field("text", stored=True, tokenizer_name="en_stem")
    # Hashed metadata tokens for filters (search/filters.py), one value per token.
    builder.add_text_field("meta_kv", stored=False, tokenizer_name="raw", index_option="basic")
    # Stored only: with them a page of results is read from here by id (sub-millisecond)
    # instead of a LanceDB query (~5 ms at 100k rows).
    builder.add_integer_field("ordinal", stored=True, indexed=False)
    builder.add_integer_field("page", stored=True, indexed=False)
    builder.add_bytes_field("metadata", stored=True, indexed=False)
    # The chunk's passage (its id in the passages index), and its JSON Lines record.
    builder.add_text_field("parent", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("record_id", stored=True, tokenizer_name="raw", index_option="basic")
    return builder.build()


def passage_schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("document_id", stored=True, indexed=True, fast=True)
    builder.add_text_field("title", stored=False, tokenizer_name="en_stem")
    builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
    builder.add_text_field("meta_kv", stored=False, tokenizer_name="raw", index_option="basic")
    # Its chunks' ids in document order (JSON): a search reads them with the passage's id.
    builder.add_bytes_field("chunks", stored=True, indexed=False)
    return builder.build()


# Fields added after the first release; an index built before lacks them (see field_names).
LATER_FIELDS = frozenset({"meta_kv", "ordinal", "page", "metadata", "parent", "record_id"})
# How much a title counts against the text in passage scores. JSON Lines records lead
# their text with their title (so it counts twice at 1.0); for files it is the file name.
# Chosen on SciFact's tuning half (bench/quality.py): 0.35 gave lexical nDCG@10 0.693 on
# passages (1.0: 0.669, 0.25: 0.694, 2.0: 0.619).
PASSAGE_TITLE_BOOST = 0.35

_WORD = re.compile(r"\w+", re.UNICODE)


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


class Bm25Index:
    def __init__(self, path: Path, remote: ObjectStore | None = None) -> None:
        self.path = Path(path)
        self._index: Any = None
        self._fields: frozenset[str] | None = None  # of the index on disk, once it exists
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
            self._fields = None
            self._passages = None

    def _publish(self) -> None:
        if self.replica is not None:
            self.replica.publish()

    def exists(self) -> bool:
        self._catch_up()
        return (self.path / "meta.json").exists()

    def index(self) -> Any:
        import tantivy

        self._catch_up()
        if self._index is None:
            if self.exists():
                # Opened with the schema it was built with: an index from an older release
                # (without the metadata field) keeps working for search and upserts.
                self._index = tantivy.Index.open(str(self.path))
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._index = tantivy.Index(bm25_schema(), path=str(self.path))
        return self._index

    def field_names(self) -> frozenset[str]:
        """The fields of the index on disk (older releases built fewer; an index's schema
        never changes, so it is read once); today's when there is no index yet."""
        self._catch_up()
        if self._fields is None:
            if not self.exists():
                return LATER_FIELDS
            meta = json.loads((self.path / "meta.json").read_text())
            self._fields = frozenset(str(f.get("name")) for f in meta.get("schema", []))
        return self._fields

    def supports_metadata_filters(self) -> bool:
        """False for an index built before metadata tokens were indexed."""
        return "meta_kv" in self.field_names()

    def upsert(self, rows: Sequence[EmbeddedChunk]) -> None:
        import tantivy

        if not rows:
            return
        self.sync()  # another host may have written since (a job moves between workers)
        # One writer per flush: tantivy allows one writer per index across processes, and
        # holding it only for a flush lets other processes write between our flushes.
        writer = self.index().writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
        names = self.field_names()
        with_metadata = "meta_kv" in names
        with_rows = "ordinal" in names
        with_parents = "parent" in names
        try:
            for row in rows:
                chunk = row.chunk
                if not row.new:
                    writer.delete_documents_by_term("id", chunk.id)
                fields: dict[str, Any] = {
                    "id": chunk.id,
                    "document_id": chunk.document_id,
                    "title": chunk.title or "",
                    "text": chunk.text,
                }
                if with_metadata:
                    fields["meta_kv"] = metadata_tokens(chunk.metadata)
                if with_rows:
                    fields["ordinal"] = chunk.ordinal
                    if chunk.page is not None:
                        fields["page"] = chunk.page
                    fields["metadata"] = chunk.metadata_json().encode()
                if with_parents and chunk.parent_id:
                    fields["parent"] = chunk.parent_id
                if "record_id" in names and chunk.record_id is not None:
                    fields["record_id"] = chunk.record_id
                writer.add_document(tantivy.Document(**fields))
            writer.commit()
        except BaseException:
            writer.rollback()
            raise
        finally:
            writer.wait_merging_threads()
        self.index().reload()
        # Passages after their chunks: a crash between the two leaves chunks whose
        # passage is missing (ranked by their own score) until the rerun writes it.
        if with_parents:
            self.passages.upsert(rows)
        self._publish()

    @property
    def passages(self) -> PassageIndex:
        self._catch_up()
        if self._passages is None:
            self._passages = PassageIndex(self.path / "passages")
        return self._passages

    def has_passages(self) -> bool:
        """False for an index built before passages existed (or still empty)."""
        return "parent" in self.field_names() and self.passages.exists()

    def delete_documents(self, document_ids: Sequence[int]) -> None:
        if not document_ids:
            return
        self.sync()
        if not self.exists():
            return
        _delete_documents(self.index(), document_ids)
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
        return _scored(self.index(), self.text_query(text), k, where)

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

    def parents(self, ids: Sequence[str]) -> dict[str, str]:
        """The passage of each of these chunks (none from an index without passages)."""
        import tantivy

        wanted = list(dict.fromkeys(ids))
        if not wanted or not self.exists() or "parent" not in self.field_names():
            return {}
        index = self.index()
        query = tantivy.Query.term_set_query(index.schema, "id", wanted)
        searcher = index.searcher()
        out: dict[str, str] = {}
        for _score, address in searcher.search(query, len(wanted) * 2, count=False).hits:
            doc = searcher.doc(address)
            parent = doc.get_first("parent")
            if parent:
                out[doc["id"][0]] = parent
        return out

    def rows(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored rows of these chunk ids (fields as in LanceDB, vectors aside); none
        from an index of an older release that did not store them all."""
        import tantivy

        wanted = list(dict.fromkeys(ids))
        if not wanted or not self.exists() or "ordinal" not in self.field_names():
            return {}
        index = self.index()
        query = tantivy.Query.term_set_query(index.schema, "id", wanted)
        searcher = index.searcher()
        out: dict[str, dict[str, Any]] = {}
        for _score, address in searcher.search(query, len(wanted) * 2, count=False).hits:
            doc = searcher.doc(address).to_dict()
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

    def snippets(self, text: str, contents: dict[str, str], max_chars: int = 240) -> dict[str, str]:
        """An HTML-escaped fragment of each content with the query's (stemmed) terms in
        ``<mark>``; the start of the text when no term occurs in it."""
        import html

        import tantivy

        query = self.text_query(highlight_words(text)) if self.exists() else None
        out: dict[str, str] = {}
        generator = None
        if query is not None:
            generator = tantivy.SnippetGenerator.create(
                self.index().searcher(), query, self.index().schema, "text"
            )
            generator.set_max_num_chars(max_chars)
        for key, content in contents.items():
            fragment = ""
            if generator is not None:
                snippet = generator.snippet_from_doc(tantivy.Document(text=content))
                if snippet.highlighted():
                    fragment = _mark(snippet.fragment(), snippet.highlighted())
            if not fragment:
                head = content[:max_chars]
                fragment = html.escape(head) + ("…" if len(content) > max_chars else "")
            out[key] = fragment
        return out

    def drop(self) -> None:
        """Delete the index: the local copy, and the store's when there is one."""
        self._sync_before_use = False
        self._index = None
        self._fields = None
        self._passages = None
        shutil.rmtree(self.path, ignore_errors=True)
        if self.replica is not None:
            self.replica.remote.delete_tree()


class PassageIndex:
    """The passages of one generation: one tantivy document each (title and the text of
    its chunks), written with their first chunk, deleted with their document."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index: Any = None

    def exists(self) -> bool:
        return (self.path / "meta.json").exists()

    def index(self) -> Any:
        import tantivy

        if self._index is None:
            if self.exists():
                self._index = tantivy.Index.open(str(self.path))
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._index = tantivy.Index(passage_schema(), path=str(self.path))
        return self._index

    def upsert(self, rows: Sequence[EmbeddedChunk]) -> None:
        import tantivy

        heads = [r for r in rows if r.chunk.parent_id and r.chunk.parent_text]
        if not heads:
            return
        writer = self.index().writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
        try:
            for row in heads:
                chunk = row.chunk
                if not row.new:
                    writer.delete_documents_by_term("id", chunk.parent_id)
                writer.add_document(
                    tantivy.Document(
                        id=chunk.parent_id,
                        document_id=chunk.document_id,
                        title=chunk.title or "",
                        text=chunk.parent_text,
                        meta_kv=metadata_tokens(chunk.metadata),
                        chunks=json.dumps(list(chunk.parent_chunks)).encode(),
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
        if document_ids and self.exists():
            _delete_documents(self.index(), document_ids)

    def count(self) -> int:
        if not self.exists():
            return 0
        index = self.index()
        index.reload()
        return int(index.searcher().num_docs)

    def search_members(
        self, text: str, k: int, *, where: SearchFilter | None = None
    ) -> list[tuple[str, float, list[str]]]:
        """(passage id, BM25 score, its chunk ids) of the best ``k`` passages."""
        import tantivy

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
        if where is not None and not where.empty:
            if where.impossible():
                return []
            narrowing = where.tantivy_query(index.schema)
            assert narrowing is not None
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, query), (tantivy.Occur.Must, narrowing)]
            )
        searcher = index.searcher()
        out = []
        for score, address in searcher.search(query, k).hits:
            doc = searcher.doc(address)
            out.append((doc["id"][0], float(score), json.loads(bytes(doc["chunks"][0]))))
        return out


def _scored(
    index: Any, query: Any | None, k: int, where: SearchFilter | None
) -> list[tuple[str, float]]:
    """(id, score) of the best ``k`` matches of ``query`` narrowed by ``where``."""
    import tantivy

    if query is None:
        return []
    index.reload()
    if where is not None and not where.empty:
        if where.impossible():
            return []
        narrowing = where.tantivy_query(index.schema)
        assert narrowing is not None  # a non-empty filter has clauses
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, query), (tantivy.Occur.Must, narrowing)]
        )
    searcher = index.searcher()
    return [
        (searcher.doc(address)["id"][0], float(score))
        for score, address in searcher.search(query, k).hits
    ]


def _delete_documents(index: Any, document_ids: Sequence[int]) -> None:
    writer = index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
    try:
        for doc in document_ids:
            writer.delete_documents_by_term("document_id", int(doc))
        writer.commit()
    finally:
        writer.wait_merging_threads()
    index.reload()


def _mark(fragment: str, ranges: Any) -> str:
    """Wrap the highlighted ranges (tantivy gives UTF-8 byte offsets) in <mark>."""
    import html

    raw = fragment.encode("utf-8")

    def piece(start: int, end: int) -> str:
        return html.escape(raw[start:end].decode("utf-8", errors="ignore"))

    parts: list[str] = []
    pos = 0
    for r in sorted(ranges, key=lambda r: r.start):
        parts.append(piece(pos, r.start))
        parts.append("<mark>" + piece(r.start, r.end) + "</mark>")
        pos = r.end
    parts.append(piece(pos, len(raw)))
    return "".join(parts)
